//! Test fixtures: every process a test starts is stopped by it, by pid, even on failure.

pub mod nb;
pub mod nbrows;
pub mod ovn;
pub mod peerd;
pub mod peerd_process;
pub mod pg;
pub mod process;
pub mod vpc;
