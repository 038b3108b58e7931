"""Reading message files in bounded chunks: good rows with their text, and bad rows with a reason."""

from elmobatch.reading.detect import FORMATS, ReadDecisions, ReadError, detect_encoding
from elmobatch.settings import ReadOptions
from elmobatch.reading.reader import (DEFAULT_CHUNK_ROWS, DEFAULT_MAX_TEXT_CHARS, REASONS, REJECT_COLUMNS, Chunk,
                                      MessageReader, read_messages)

__all__ = ["Chunk", "DEFAULT_CHUNK_ROWS", "DEFAULT_MAX_TEXT_CHARS", "FORMATS", "MessageReader", "REASONS",
           "REJECT_COLUMNS", "ReadDecisions", "ReadError", "ReadOptions", "detect_encoding", "read_messages"]
