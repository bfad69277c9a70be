//! The Environment Abstraction Layer, started once per process.

use std::ffi::{c_char, c_int, CString};
use std::sync::OnceLock;

use super::ffi::{self, dpdk_error, message, ERR_LEN};
use crate::source::CaptureError;

/// The EAL, started at most once per process.
pub struct Eal;

/// The arguments of the one start, and how it went.
pub(super) static EAL: OnceLock<(Vec<String>, Result<(), String>)> = OnceLock::new();

impl Eal {
    /// Starts the EAL with `args` (as on a DPDK program's command line,
    /// without the program name). Once per process: a later call with the
    /// same arguments returns the first call's outcome; other arguments are
    /// refused.
    pub fn init(args: &[String]) -> Result<(), CaptureError> {
        let (first, outcome) = EAL.get_or_init(|| (args.to_vec(), Eal::start(args)));
        if first != args {
            return Err(dpdk_error(
                "starting the DPDK EAL",
                format!("already started in this process with {first:?}"),
            ));
        }
        outcome
            .clone()
            .map_err(|e| dpdk_error("the DPDK EAL cannot start", e))
    }

    fn start(args: &[String]) -> Result<(), String> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        for arg in std::iter::once("fastcapa").chain(args.iter().map(String::as_str)) {
            owned.push(CString::new(arg).map_err(|_| format!("{arg:?} holds a NUL byte"))?);
        }
        // rte_eal_init may reorder argv and keeps pointers into it: leaked
        // on purpose, the EAL lives as long as the process.
        let owned: &'static mut [CString] = Box::leak(owned.into_boxed_slice());
        let argv: &'static mut [*mut c_char] = Box::leak(
            owned
                .iter_mut()
                .map(|s| s.as_ptr().cast_mut())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let mut err = [0 as c_char; ERR_LEN];
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive
        // the process; err is ERR_LEN bytes the shim writes a C string into.
        let ret = unsafe {
            ffi::fcapa_eal_init(
                argv.len() as c_int,
                argv.as_mut_ptr(),
                err.as_mut_ptr(),
                ERR_LEN,
            )
        };
        if ret < 0 {
            return Err(message(&err));
        }
        Ok(())
    }
}
