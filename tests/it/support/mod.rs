//! Test fixtures: every process a test starts is stopped by it, by pid, even on failure.

pub mod nb;
pub mod ovn;
pub mod peerd;
pub mod pg;
pub mod process;
pub mod vpc;
