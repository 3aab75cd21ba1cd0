//! The container image's start-up defaults. configurable-http-proxy's image starts the
//! proxy through a shell script that listens for the API on every interface (a container's
//! loopback is reachable from nowhere else) unless told where, and reads the API token from
//! a file (a mounted secret). Our image has no shell: the binary does the same when the
//! image's environment sets [`IMAGE_ENV`] to `1`. Outside the image nothing changes.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::cli::{AUTH_TOKEN_ENV, Env};

/// Environment variable that turns the image's defaults on (`1`); the `Containerfile` sets it.
pub const IMAGE_ENV: &str = "SWITCHYARD_CHP_IMAGE";
/// Environment variable naming a file that holds the API token (image only).
pub const AUTH_TOKEN_FILE_ENV: &str = "CONFIGPROXY_AUTH_TOKEN_FILE";

/// Whether this process runs with the image's defaults.
pub fn image_defaults_on() -> bool {
    std::env::var_os(IMAGE_ENV).is_some_and(|v| v == "1")
}

/// The command line with `--api-ip 0.0.0.0` added after the program name, unless it names
/// `--api-ip` or `--api-socket` already (in either `--flag value` or `--flag=value` form).
pub fn image_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let named = args.iter().skip(1).any(|a| {
        let a = a.as_bytes();
        [&b"--api-ip"[..], b"--api-socket"].iter().any(|flag| {
            a.strip_prefix(*flag)
                .is_some_and(|rest| rest.is_empty() || rest[0] == b'=')
        })
    });
    if !named {
        let at = args.len().min(1);
        args.splice(at..at, ["--api-ip".into(), "0.0.0.0".into()]);
    }
    args
}

// === impl Env ===

impl Env {
    /// Reads the API token from the file named by `CONFIGPROXY_AUTH_TOKEN_FILE` (`file`),
    /// if set and not empty. Trailing line ends are dropped, as a shell's `$(cat file)`
    /// does. Giving both the token and the file is an error: which one wins would be a
    /// guess.
    ///
    /// # Errors
    ///
    /// The message to print: both set, or the file cannot be read.
    pub fn token_from_file(&mut self, file: Option<&OsStr>) -> Result<(), String> {
        let Some(file) = file.filter(|f| !f.is_empty()) else {
            return Ok(());
        };
        if self.auth_token.is_some() {
            return Err(format!(
                "both {AUTH_TOKEN_ENV} and {AUTH_TOKEN_FILE_ENV} are set; give one"
            ));
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "{AUTH_TOKEN_FILE_ENV}: cannot read {}: {e}",
                std::path::Path::new(file).display()
            )
        })?;
        let token = text.trim_end_matches(['\n', '\r']);
        self.auth_token = (!token.is_empty()).then(|| token.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn api_ip_is_added_unless_named() {
        assert_eq!(
            image_args(args(&["chp", "--port=8000"])),
            args(&["chp", "--api-ip", "0.0.0.0", "--port=8000"])
        );
        assert_eq!(
            image_args(args(&["chp"])),
            args(&["chp", "--api-ip", "0.0.0.0"])
        );
        for kept in [
            &["chp", "--api-ip="][..],
            &["chp", "--api-ip", "10.0.0.1"],
            &["chp", "--api-socket=/run/api.sock"],
            &["chp", "--port", "1", "--api-socket", "/run/api.sock"],
        ] {
            assert_eq!(image_args(args(kept)), args(kept), "{kept:?}");
        }
        // A flag that only starts like one is not it.
        assert_eq!(
            image_args(args(&["chp", "--api-ipx"])),
            args(&["chp", "--api-ip", "0.0.0.0", "--api-ipx"])
        );
    }

    #[test]
    fn token_file_is_read_and_exclusive() {
        let dir = std::env::temp_dir().join(format!("sy-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "abc def\n\n").unwrap();

        let mut env = Env::default();
        env.token_from_file(Some(file.as_os_str())).unwrap();
        assert_eq!(env.auth_token.as_deref(), Some("abc def"));

        let err = env.token_from_file(Some(file.as_os_str())).unwrap_err();
        assert!(err.contains("both"), "{err}");

        let mut env = Env::default();
        env.token_from_file(None).unwrap();
        env.token_from_file(Some(OsStr::new(""))).unwrap();
        assert_eq!(env.auth_token, None);

        let err = env
            .token_from_file(Some(dir.join("missing").as_os_str()))
            .unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
