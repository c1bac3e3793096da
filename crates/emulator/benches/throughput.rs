//! Placeholder so the workspace manifest parses; the emulator engineer replaces it.
fn main() {}
