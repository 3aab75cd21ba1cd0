//! Finding the master through Redis Sentinel:
//! `redis+sentinel://[user:password@]host1:26379,host2:26379/<master name>[/<db>]`.
//!
//! The sentinels are asked in turn (`SENTINEL get-master-addr-by-name`) for the master's
//! address; the first answer is used. The password (from the URL or
//! `CONFIGPROXY_REDIS_PASSWORD`) is the master's; the sentinels are reached without one.
//! The store asks again whenever it reconnects, and every few seconds while connected, so
//! it follows a failover (the master dead: its connections break) and a switch-over (the
//! old master alive but demoted: the address changes).

use std::time::Duration;

use percent_encoding::percent_decode_str;

/// The URL scheme of a Sentinel-discovered Redis.
pub(crate) const SCHEME: &str = "redis+sentinel://";
const DEFAULT_PORT: u16 = 26379;
/// Longest wait for one sentinel's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// A parsed `redis+sentinel://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    /// `host:port` of each sentinel (IPv6 hosts in brackets).
    pub(crate) sentinels: Vec<String>,
    pub(crate) master: String,
    pub(crate) db: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl SentinelUrl {
    /// Whether `url` is a Sentinel URL (scheme compared without case).
    pub(crate) fn is_sentinel(url: &str) -> bool {
        url.get(..SCHEME.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
    }

    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        if !Self::is_sentinel(url) {
            return Err(format!("not a {SCHEME} URL"));
        }
        let rest = &url[SCHEME.len()..];
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "the user or password is not UTF-8 once decoded".to_owned())
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
                let pass = (!pass.is_empty()).then(|| decode(pass)).transpose()?;
                (user, pass)
            }
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            sentinels.push(host_port(host)?);
        }
        let mut parts = path.trim_end_matches('/').splitn(2, '/');
        let master = parts.next().unwrap_or_default();
        if master.is_empty() {
            return Err(
                "no master name: give redis+sentinel://host:26379/<master>[/<db>]".to_owned(),
            );
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| format!("the database {db:?} is not a number"))?,
        };
        Ok(Self {
            sentinels,
            master: decode(master)?,
            db,
            username,
            password,
        })
    }

    /// The master's `host:port` as the first sentinel that answers gives it.
    pub(crate) async fn master_addr(&self) -> Result<String, String> {
        let mut last = String::from("no sentinel given");
        for sentinel in &self.sentinels {
            match tokio::time::timeout(ASK_TIMEOUT, self.ask(sentinel)).await {
                Ok(Ok(Some((host, port)))) => {
                    return Ok(if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    });
                }
                Ok(Ok(None)) => {
                    last = format!("sentinel {sentinel} knows no master {:?}", self.master)
                }
                Ok(Err(e)) => last = format!("sentinel {sentinel}: {e}"),
                Err(_) => last = format!("sentinel {sentinel}: no answer within {ASK_TIMEOUT:?}"),
            }
        }
        Err(last)
    }

    async fn ask(&self, sentinel: &str) -> redis::RedisResult<Option<(String, u16)>> {
        let client = redis::Client::open(format!("redis://{sentinel}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut conn)
            .await
    }

    /// The URL of the master at `addr` (credentials percent-encoded again), for the same
    /// handling as a `redis://` URL's.
    pub(crate) fn master_url(&self, addr: &str) -> String {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let userinfo = match (&self.username, &self.password) {
            (None, None) => String::new(),
            (user, pass) => format!(
                "{}:{}@",
                user.as_deref().map(enc).unwrap_or_default(),
                pass.as_deref().map(enc).unwrap_or_default()
            ),
        };
        format!("redis://{userinfo}{addr}/{}", self.db)
    }
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// `host[:port]` (IPv6 in brackets) as `host:port`, with the default sentinel port.
fn host_port(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not a sentinel host[:port]");
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').ok_or_else(bad)?;
        (format!("[{host}]"), rest.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" || host.contains(['/', '@', ' ']) {
        return Err(bad());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = SentinelUrl::parse("redis+sentinel://h1:26379,h2,[::1]:5000/mymaster/3").unwrap();
        assert_eq!(u.sentinels, ["h1:26379", "h2:26379", "[::1]:5000"]);
        assert_eq!((u.master.as_str(), u.db), ("mymaster", 3));
        assert_eq!((u.username.as_deref(), u.password.as_deref()), (None, None));
        assert_eq!(u.master_url("10.0.0.5:6379"), "redis://10.0.0.5:6379/3");

        let u = SentinelUrl::parse("REDIS+SENTINEL://:p%40ss@h1/m").unwrap();
        assert_eq!((u.master.as_str(), u.db), ("m", 0));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.master_url("h:1"), "redis://:p%40ss@h:1/0");

        for bad in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:26379/",
            "redis+sentinel://h1:notaport/m",
            "redis+sentinel://h1,,h2/m",
            "redis+sentinel:///m",
            "redis+sentinel://h1/m/x",
            "redis://h1/m",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
