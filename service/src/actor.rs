//! Who does things, for the audit trail.

/// The one who asked for an operation: `cli:<account>` for a command (the
/// real user id's account, with `sudo:<SUDO_USER>` beside it), the logged-in
/// administrator for the admin API, `gateway` for the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// A named actor (API administrator, gateway, tests).
    pub fn named(name: impl Into<String>) -> Self {
        Actor(name.into())
    }

    /// The person running this command: the account of the real user id
    /// (not `$USER`, which anybody can set), and `SUDO_USER` when sudo ran it.
    pub fn from_process() -> Self {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let name = account_name(uid).unwrap_or_else(|| format!("uid={uid}"));
        let mut s = format!("cli:{name}");
        if let Ok(sudo) = std::env::var("SUDO_USER")
            && !sudo.is_empty()
        {
            s.push_str(&format!(" (sudo:{sudo})"));
        }
        Actor(s)
    }

    /// The text recorded.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn account_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value to be filled in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives its use.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into buf, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_the_real_uid_not_user() {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let a = Actor::from_process();
        if uid == 0 {
            assert!(a.as_str().starts_with("cli:root"), "{a:?}");
        }
        assert!(!a.as_str().contains("unknown"));
    }
}
