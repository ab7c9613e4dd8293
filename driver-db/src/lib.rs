//! Database driver (being written: issue 4).
