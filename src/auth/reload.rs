//! Files re-read when they change on disk (certificate rotation, policy edits) without a
//! restart: [`Watched::current`] looks at the files' metadata on each use (a `stat` per file,
//! no background task, so a change is seen by the very next connection or call) and
//! re-parses them when it changed. A version that does not load keeps the last good one, says
//! so in the log once per change, and sets [`crate::metrics::FILE_RELOAD_STALE`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;

/// What identifies a version of a file: Kubernetes swaps a secret's files by renaming a
/// symlinked directory (a new inode), editors and `cp` rewrite in place (mtime, length).
type Stamp = Option<(SystemTime, u64, u64)>;

type Loader<T> = Box<dyn Fn() -> anyhow::Result<T> + Send + Sync>;

/// A value loaded from files, re-loaded when they change.
pub struct Watched<T> {
    /// The metric label and log name: `tls` or `policy`.
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Loader<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    /// The stamps last tried (loaded or refused): a refused version is not retried until
    /// the files change again.
    tried: Vec<Stamp>,
    current: Arc<T>,
}

impl<T> Watched<T> {
    /// Loads the files once; an error here is a start-up error.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn() -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let tried = stamps(&paths);
        let current = Arc::new(load().with_context(|| format!("cannot load the {what} files"))?);
        metrics::gauge!(crate::metrics::FILE_RELOAD_STALE, "file" => what).set(0.0);
        Ok(Self {
            what,
            paths,
            load: Box::new(load),
            state: Mutex::new(State { tried, current }),
        })
    }

    /// The current value, re-loaded first if a file changed since the last try.
    pub fn current(&self) -> Arc<T> {
        let now = stamps(&self.paths);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now != state.tried {
            state.tried = now;
            let what = self.what;
            match (self.load)() {
                Ok(v) => {
                    state.current = Arc::new(v);
                    tracing::info!(file = what, paths = ?self.paths, "reloaded");
                    metrics::counter!(crate::metrics::FILE_RELOADS_TOTAL, "file" => what, "result" => "ok")
                        .increment(1);
                    metrics::gauge!(crate::metrics::FILE_RELOAD_STALE, "file" => what).set(0.0);
                }
                Err(e) => {
                    tracing::error!(
                        file = what,
                        paths = ?self.paths,
                        error = format!("{e:#}"),
                        "changed file refused: the last good version stays in use"
                    );
                    metrics::counter!(crate::metrics::FILE_RELOADS_TOTAL, "file" => what, "result" => "error")
                        .increment(1);
                    metrics::gauge!(crate::metrics::FILE_RELOAD_STALE, "file" => what).set(1.0);
                }
            }
        }
        state.current.clone()
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_on_change_and_keeps_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let p = path.clone();
        let w = Watched::new("test", vec![path.clone()], move || {
            Ok(std::fs::read_to_string(&p)?.trim().parse::<u32>()?)
        })
        .unwrap();
        assert_eq!(*w.current(), 1);
        std::fs::write(&path, "22").unwrap();
        assert_eq!(*w.current(), 22);
        std::fs::write(&path, "not a number").unwrap();
        assert_eq!(*w.current(), 22);
        std::fs::write(&path, "333").unwrap();
        assert_eq!(*w.current(), 333);
        // Replaced by rename (a new inode), as Kubernetes does with secrets.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "444").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(*w.current(), 444);
    }

    #[test]
    fn a_refused_version_shows_in_the_metrics() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let p = path.clone();
        metrics::with_local_recorder(&recorder, || {
            let w = Watched::new("policy", vec![path.clone()], move || {
                Ok(std::fs::read_to_string(&p)?.trim().parse::<u32>()?)
            })
            .unwrap();
            std::fs::write(&path, "broken").unwrap();
            assert_eq!(*w.current(), 1);
        });
        let text = handle.render();
        assert!(
            text.contains(r#"ovn_peerd_file_reloads_total{file="policy",result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ovn_peerd_file_reload_stale{file="policy"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_first_load_that_fails_is_an_error() {
        let e = Watched::<u32>::new("test", vec!["/nonexistent/x".into()], || {
            anyhow::bail!("no such file")
        })
        .err()
        .unwrap();
        assert!(
            format!("{e:#}").contains("cannot load the test files"),
            "{e:#}"
        );
    }
}
