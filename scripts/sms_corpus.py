"""Write rows START..END-1 of the SMS spam CSV's message column as a pretraining corpus.

    python scripts/sms_corpus.py ../shared/data/sms_spam.csv 0 4457 build/sms_train.txt

The file is Latin-1; 50 rows spill commas of their message into 3 unnamed trailing columns,
which are joined back with ",". Output: UTF-8, one message per line (newlines become spaces).
Only the message text is written, never the label.
"""

import json
import sys

import pandas as pd


def messages(csv_path: str, start: int, end: int) -> list[str]:
    """The message text of rows start..end-1 (0-based data rows), one line each."""
    frame = pd.read_csv(csv_path, encoding="latin-1", dtype=str, keep_default_na=False)
    rows = frame.iloc[start:end, 1:]  # column 0 is the label
    if len(rows) != end - start:
        sys.exit(f"{csv_path}: asked for rows {start}..{end - 1}, the file has {len(frame)} rows")
    return [",".join(part for part in row if part).replace("\r", " ").replace("\n", " ")
            for row in rows.itertuples(index=False)]


def main(csv_path: str, start: int, end: int, out_path: str) -> None:
    lines = messages(csv_path, start, end)
    with open(out_path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    source = {"source": f"SMS Spam Collection, message text of rows {start}..{end - 1} (labels not used)",
              "license": "CC BY 4.0 (UCI Machine Learning Repository; Almeida and Gomez Hidalgo, 2011)"}
    with open(out_path + ".source.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(source, indent=2) + "\n")
    print(f"{out_path}: {len(lines)} messages (rows {start}..{end - 1} of {csv_path})")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
