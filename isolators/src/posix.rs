//! The posix isolator: no kernel isolation at all.
//!
//! It exists so the executor can use one code path whatever the isolation: with posix the
//! task runs in its own process group and the executor signals that group itself, so every
//! container operation here is a no-op.

use std::path::PathBuf;

use crate::{Container, Isolator, IsolatorError, Limits};

/// Isolator for `--isolation posix`: validates its inputs and otherwise does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct PosixIsolator;

impl Isolator for PosixIsolator {
    fn name(&self) -> &'static str {
        "posix"
    }

    fn prepare(
        &self,
        container_id: &str,
        limits: &Limits,
    ) -> Result<Box<dyn Container>, IsolatorError> {
        // Validate anyway so a bad id or limit fails the same way under every isolation.
        crate::util::validate_container_id(container_id)?;
        crate::util::validate_limits(limits)?;
        Ok(Box::new(PosixContainer {
            id: container_id.to_string(),
        }))
    }

    fn recover(&self, container_id: &str) -> Result<Option<Box<dyn Container>>, IsolatorError> {
        // Nothing on the host records a posix container, so any valid id can be re-attached.
        crate::util::validate_container_id(container_id)?;
        Ok(Some(Box::new(PosixContainer {
            id: container_id.to_string(),
        })))
    }

    fn containers(&self) -> Result<Vec<String>, IsolatorError> {
        // The agent finds posix tasks by their process group and environment instead.
        Ok(Vec::new())
    }
}

/// A posix "container": only an id.
#[derive(Debug, Clone)]
pub struct PosixContainer {
    id: String,
}

impl Container for PosixContainer {
    fn id(&self) -> &str {
        &self.id
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn pids(&self) -> Vec<i32> {
        Vec::new()
    }

    fn oom_killed(&self) -> bool {
        false
    }

    fn memory_usage(&self) -> Option<u64> {
        None
    }

    fn kill_all(&self) -> Result<(), IsolatorError> {
        Ok(())
    }

    fn destroy(&self) -> Result<(), IsolatorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_is_a_no_op() {
        let iso = PosixIsolator;
        assert_eq!(iso.name(), "posix");
        let limits = Limits {
            cpus: 1.0,
            mem_mb: 128.0,
            pids_max: None,
        };
        let c = iso.prepare("t1", &limits).unwrap();
        assert_eq!(c.id(), "t1");
        assert!(c.procs_files().is_empty());
        assert!(c.pids().is_empty());
        assert!(!c.oom_killed());
        assert_eq!(c.memory_usage(), None);
        c.kill_all().unwrap();
        c.destroy().unwrap();
        c.destroy().unwrap();
        assert!(iso.recover("t1").unwrap().is_some());
        assert!(iso.containers().unwrap().is_empty());
        assert!(iso.destroy_container("t1").unwrap());
        assert!(iso.prepare("a/b", &limits).is_err());
    }
}
