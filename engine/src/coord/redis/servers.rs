//! Where the Redis of a volume is, and how to get a connection to it: one
//! server (`redis://`, `rediss://`), a master found through Sentinel
//! (`redis+sentinel://`), or a Redis Cluster (`redis+cluster://`,
//! `rediss+cluster://`).
//!
//! Multi-host URLs list their hosts separated by `,` (or `;`, which fits in
//! a mount option list), with one optional
//! `user:password@` that applies to the Redis servers (not to sentinels):
//! - `redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]`
//! - `redis+cluster://[[user]:password@]host:port[,host:port...]`

use parking_lot::Mutex;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionLike, RedisConnectionInfo, RedisResult};
use std::time::Duration;

/// A connection to whichever server holds the volume's keys.
pub(super) type Con = Box<dyn ConnectionLike + Send>;

/// How long connecting, and then one command, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The Redis deployment a URL names.
pub(super) enum Servers {
    Single(redis::Client),
    /// The client asks the sentinels for the current master at every new
    /// connection, so a failover is followed as soon as the old
    /// connections break.
    Sentinel(Mutex<SentinelClient>),
    /// Commands are routed by key slot. `seeds` are the URLs given, for the
    /// one thing routing cannot do: a subscription (PUBLISH reaches every
    /// node of a cluster, so any node will do).
    Cluster {
        client: ClusterClient,
        seeds: Vec<String>,
    },
}

/// A URL sopfs cannot use, with why.
pub(super) type ParseError = String;

impl Servers {
    /// Parses `url` (nothing is contacted yet).
    pub(super) fn parse(url: &str) -> Result<Servers, ParseError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(
                "expected redis://, rediss://, redis+sentinel:// or redis+cluster://".into(),
            );
        };
        match scheme {
            "redis+sentinel" => sentinel(rest),
            "redis+cluster" => cluster("redis", rest),
            "rediss+cluster" => cluster("rediss", rest),
            "rediss+sentinel" => {
                Err("TLS through Sentinel is not supported; use rediss:// to one server or rediss+cluster://".into())
            }
            _ => redis::Client::open(url)
                .map(Servers::Single)
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether the volume's keys must share one hash slot (a cluster runs a
    /// script only on keys of one slot).
    pub(super) fn needs_hash_tag(&self) -> bool {
        matches!(self, Servers::Cluster { .. })
    }

    /// A new connection to the server that holds the volume's keys.
    pub(super) fn connection(&self) -> RedisResult<Con> {
        match self {
            Servers::Cluster { client, .. } => Ok(Box::new(client.get_connection()?)),
            _ => {
                let con = self
                    .node_client()?
                    .get_connection_with_timeout(CONNECT_TIMEOUT)?;
                con.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
                Ok(Box::new(con))
            }
        }
    }

    /// A client for one server that can carry a subscription to the
    /// volume's channel: the server itself, the current master, or any
    /// cluster node that answers.
    pub(super) fn node_client(&self) -> RedisResult<redis::Client> {
        match self {
            Servers::Single(c) => Ok(c.clone()),
            Servers::Sentinel(s) => s.lock().get_client(),
            Servers::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds {
                    let client = redis::Client::open(seed.as_str())?;
                    match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
                        Ok(_) => return Ok(client),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "no cluster node given",
                    ))
                }))
            }
        }
    }
}

/// The parts of a multi-host URL: credentials, hosts, path segments.
struct MultiHost<'a> {
    user: Option<&'a str>,
    password: Option<&'a str>,
    hosts: Vec<&'a str>,
    path: Vec<&'a str>,
}

fn split_multi_host(rest: &str) -> Result<MultiHost<'_>, ParseError> {
    let (auth, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (user, password) = match auth {
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then_some(u), Some(p)),
            None => ((!a.is_empty()).then_some(a), None),
        },
        None => (None, None),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hosts: Vec<&str> = hosts.split([',', ';']).filter(|h| !h.is_empty()).collect();
    if hosts.is_empty() {
        return Err("no host:port given".into());
    }
    for h in &hosts {
        let port_ok = h
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("'{h}' is not host:port"));
        }
    }
    let path = path.split('/').filter(|p| !p.is_empty()).collect();
    Ok(MultiHost {
        user,
        password,
        hosts,
        path,
    })
}

fn sentinel(rest: &str) -> Result<Servers, ParseError> {
    let m = split_multi_host(rest)?;
    let (service, db) = match m.path.as_slice() {
        [service] => (*service, 0),
        [service, db] => (
            *service,
            db.parse::<i64>()
                .map_err(|_| format!("'{db}' is not a database number"))?,
        ),
        _ => return Err("expected /SERVICE (or /SERVICE/DB) after the sentinels".into()),
    };
    let mut node = RedisConnectionInfo::default().set_db(db);
    if let Some(u) = m.user {
        node = node.set_username(u);
    }
    if let Some(p) = m.password {
        node = node.set_password(p);
    }
    let sentinels: Vec<String> = m.hosts.iter().map(|h| format!("redis://{h}/")).collect();
    let client = SentinelClient::build(
        sentinels,
        service,
        Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(node)),
        SentinelServerType::Master,
    )
    .map_err(|e| e.to_string())?;
    Ok(Servers::Sentinel(Mutex::new(client)))
}

fn cluster(scheme: &str, rest: &str) -> Result<Servers, ParseError> {
    let m = split_multi_host(rest)?;
    if !m.path.is_empty() {
        return Err("a cluster URL has no path (a cluster has one database)".into());
    }
    let auth = match (m.user, m.password) {
        (u, Some(p)) => format!("{}:{p}@", u.unwrap_or("")),
        (Some(u), None) => format!("{u}@"),
        (None, None) => String::new(),
    };
    let seeds: Vec<String> = m
        .hosts
        .iter()
        .map(|h| format!("{scheme}://{auth}{h}/"))
        .collect();
    let client = ClusterClientBuilder::new(seeds.clone())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Servers::Cluster { client, seeds })
}

#[cfg(test)]
mod tests {
    use super::Servers;

    #[test]
    fn urls_are_read_or_refused_with_a_reason() {
        assert!(matches!(
            Servers::parse("redis://127.0.0.1:6379/"),
            Ok(Servers::Single(_))
        ));
        assert!(matches!(
            Servers::parse("redis+sentinel://:pw@127.0.0.1:26379;127.0.0.1:26380/mymaster/2"),
            Ok(Servers::Sentinel(_))
        ));
        let c = Servers::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").ok();
        assert!(c.as_ref().is_some_and(Servers::needs_hash_tag));
        for (bad, why) in [
            ("redis+sentinel://127.0.0.1:26379", "SERVICE"),
            ("redis+sentinel://127.0.0.1:26379/m/x", "database"),
            ("redis+cluster://127.0.0.1", "host:port"),
            ("redis+cluster://", "no host"),
            ("redis+cluster://127.0.0.1:7000/0", "no path"),
            ("rediss+sentinel://127.0.0.1:26379/m", "TLS"),
            ("127.0.0.1:6379", "expected"),
        ] {
            match Servers::parse(bad) {
                Err(e) => assert!(e.contains(why), "{bad}: {e}"),
                Ok(_) => panic!("{bad} was accepted"),
            }
        }
    }
}
