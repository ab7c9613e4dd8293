//! The `servicegroup` operator tool (being written: issue 6).

fn main() {}
