//! Child processes of tests and benches: each one dies with the test binary.
//!
//! Two layers, because each covers what the other cannot:
//! - [`Owned`] SIGKILLs and reaps its child by pid on drop, which also runs when a test
//!   panics: the normal way a fixture ends.
//! - [`DieWithParent::die_with_parent`] sets `PR_SET_PDEATHSIG` (SIGKILL) in the child between
//!   `fork` and `exec`, so the kernel kills it when the test binary is killed (`kill -9`, a CI
//!   timeout) and no destructor runs. Linux sends the signal when the *thread* that spawned the
//!   child exits: fine for fixtures, which live inside one test's thread (or a runtime's worker
//!   threads, which outlive them); do not start one from a short-lived thread you then drop.
//!
//! Daemons are run in the foreground (never `--detach`): a detaching daemon forks, the pid we
//! hold becomes a parent that has already exited, and neither layer reaches the real server.

use std::io;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Makes a [`Command`]'s child die (SIGKILL) when the spawning thread of this process does.
pub trait DieWithParent {
    /// Sets `PR_SET_PDEATHSIG` in the child; call before `spawn`.
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn die_with_parent(&mut self) -> &mut Command {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (prctl, getppid), allocating nothing.
        unsafe {
            self.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would signal us.
                if libc::getppid() != parent {
                    return Err(io::Error::other("parent exited before the child started"));
                }
                Ok(())
            })
        };
        self
    }
}

/// A child process killed (SIGKILL, by pid) and reaped when dropped, unless already reaped.
pub struct Owned {
    /// What it is, for messages.
    pub name: &'static str,
    /// The child; `None` once it has been stopped and reaped.
    pub child: Option<Child>,
}

impl Owned {
    /// Spawns `cmd` with [`DieWithParent::die_with_parent`]; panics naming `name` if it cannot.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Owned {
        let child = cmd
            .die_with_parent()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Owned::new(name, child)
    }

    /// Takes ownership of a child spawned elsewhere.
    pub fn new(name: &'static str, child: Child) -> Owned {
        Owned {
            name,
            child: Some(child),
        }
    }

    /// Its pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `Some(status)` once it has exited (it is then reaped), `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL and reap now (`kill -9`).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM by pid, then wait up to `timeout` for the exit; SIGKILL after that.
    /// Returns whether it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) on the pid of a child we have not reaped yet: it is still ours.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "{} did not exit within {timeout:?} of SIGTERM: killing it",
                    self.name
                );
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILLs a pid when dropped: for a process that is not a `Child` we hold (or one a test
/// waits on itself and then `forget`s the guard for).
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}

/// A TCP port free on loopback right now. Another process can take it before the caller binds
/// it; prefer letting a server pick its own port (`:0`) and reading it back where it can.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait_until;

    fn alive(pid: u32) -> bool {
        // A zombie still has /proc/<pid>; its state letter is Z.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let state = s
                    .rsplit_once(')')
                    .map(|(_, r)| r.trim_start())
                    .unwrap_or("");
                !state.starts_with('Z')
            })
            .unwrap_or(false)
    }

    /// A child outlives a drop-less end of its spawner only without PR_SET_PDEATHSIG: spawn
    /// `sleep` from a thread that leaks the `Child` and exits, and see the kernel kill it.
    #[test]
    fn a_child_dies_when_its_spawning_thread_does() {
        let pid = std::thread::spawn(|| {
            let child = Command::new("sleep")
                .arg("300")
                .die_with_parent()
                .spawn()
                .expect("spawn sleep");
            let pid = child.id();
            std::mem::forget(child); // no destructor: as if the binary were killed
            pid
        })
        .join()
        .unwrap();
        let _reap_if_it_lives = KillOnDrop(pid);
        wait_until(
            "sleep to die with its parent thread",
            Duration::from_secs(10),
            || !alive(pid),
        )
        .expect("the child outlived its parent");
    }

    #[test]
    fn owned_kills_its_child_on_drop() {
        let owned = Owned::spawn("sleep", Command::new("sleep").arg("300"));
        let pid = owned.pid();
        assert!(alive(pid));
        drop(owned);
        assert!(
            !alive(pid),
            "sleep {pid} still runs after its Owned was dropped"
        );
    }
}
