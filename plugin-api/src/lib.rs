//! The optx plugin ABI: the only crate a plugin author needs.
//!
//! A plugin is a `cdylib` exporting one symbol, `optx_plugin_v1`, that returns a
//! `#[repr(C)]` table: ABI major/minor version and struct size, the plugin's name, the
//! runners and metrics it offers, and `extern "C"` functions exchanging UTF-8 JSON. The
//! host checks the version before anything else.
//!
//! This version of optx runs `kind = "command"` only: the table, the safe traits and the
//! export macro arrive with the plugin runner. What is fixed already is below.

/// The major version of the ABI: a host refuses a plugin of another major version.
pub const ABI_MAJOR: u32 = 1;
/// The minor version: a host accepts a plugin of the same major and a lower or equal minor.
pub const ABI_MINOR: u32 = 0;
/// The symbol every plugin exports.
pub const ENTRY_SYMBOL: &str = "optx_plugin_v1";

/// The words a plugin runner uses for the status of a trial (Ax's `TrialStatus` names).
pub const STATUS_WORDS: [&str; 5] = ["staged", "running", "completed", "failed", "abandoned"];

/// Whether a host of this ABI accepts a plugin built against `major.minor`.
pub fn compatible(major: u32, minor: u32) -> bool {
    // The host's minor must be at least the plugin's.
    major == ABI_MAJOR && ABI_MINOR.checked_sub(minor).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_major_and_an_older_minor_are_accepted() {
        assert!(compatible(1, 0));
        assert!(!compatible(2, 0));
        assert!(!compatible(1, 1));
        assert!(!compatible(0, 9));
    }
}
