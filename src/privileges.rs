//! Least privilege: once the capture sockets are open, the probe needs no
//! capability and, when asked, no root identity either.
//!
//! Capabilities are per thread on Linux, so this must run while the calling
//! thread is the only one that holds any: before the receive workers, the
//! producers (librdkafka's threads) and the metrics server start. A change of
//! user, on the other hand, goes through glibc's `setuid`, which applies to
//! every thread of the process.

use caps::CapSet;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error("cannot switch to uid {uid} gid {gid}: {source} (only root can use --user)")]
    SwitchUser {
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
    #[error("cannot drop capabilities: {0}")]
    Capabilities(String),
}

/// Switches to `user` (uid, gid; supplementary groups cleared) when given,
/// then empties every capability set of this thread and forbids gaining new
/// privileges through exec.
pub fn drop_privileges(user: Option<(u32, u32)>) -> Result<(), PrivilegeError> {
    if let Some((uid, gid)) = user {
        let fail = |source| PrivilegeError::SwitchUser { uid, gid, source };
        // SAFETY: plain syscalls on integer arguments; a null list with size 0
        // clears the supplementary groups. The order matters: groups and gid
        // while still root, uid last.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(fail(std::io::Error::last_os_error()));
            }
            if libc::setgid(gid) != 0 {
                return Err(fail(std::io::Error::last_os_error()));
            }
            if libc::setuid(uid) != 0 {
                return Err(fail(std::io::Error::last_os_error()));
            }
        }
    }
    let caps_error = |e: caps::errors::CapsError| PrivilegeError::Capabilities(e.to_string());
    // The ambient set first: it may only hold what permitted and inheritable hold.
    caps::clear(None, CapSet::Ambient).map_err(caps_error)?;
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        caps::clear(None, set).map_err(caps_error)?;
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError::Capabilities(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many capabilities this thread holds: (effective, permitted).
    fn held() -> (usize, usize) {
        let count = |set| caps::read(None, set).unwrap().len();
        (count(CapSet::Effective), count(CapSet::Permitted))
    }

    #[test]
    fn a_thread_that_drops_holds_nothing() {
        // In a thread of its own: the test harness's other threads keep theirs.
        std::thread::spawn(|| {
            // A thread that held nothing would pass without dropping
            // anything: this test fails instead of passing vacuously.
            let (effective, permitted) = held();
            assert!(
                effective > 0 && permitted > 0,
                "needs root or capabilities to mean anything (this thread holds \
                 {effective} effective, {permitted} permitted): run cargo test as root"
            );
            drop_privileges(None).unwrap();
            assert_eq!(held(), (0, 0));
            assert!(caps::read(None, CapSet::Inheritable).unwrap().is_empty());
        })
        .join()
        .unwrap();
    }
}
