//! The `ringcast` server binary.
fn main() {}
