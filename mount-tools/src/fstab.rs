//! Turning what mount(8) passes a helper (`mount.sopfs STORE DIR -o OPTS`)
//! into a `sopfs mount` command line: `redis=URL` becomes `--redis`, options
//! meant for mount(8) and systemd are dropped, the rest go to the daemon.

/// A `sopfs mount` invocation.
#[derive(Debug, PartialEq, Eq)]
pub struct MountCall {
    /// Store location.
    pub store: String,
    /// Mount point.
    pub mountpoint: String,
    /// `--redis` value.
    pub redis: Option<String>,
    /// Options for `-o`.
    pub options: Vec<String>,
}

impl MountCall {
    /// Arguments for the `sopfs` binary.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "mount".to_string(),
            self.store.clone(),
            self.mountpoint.clone(),
            "--background".into(),
        ];
        if let Some(r) = &self.redis {
            a.push("--redis".into());
            a.push(r.clone());
        }
        if !self.options.is_empty() {
            a.push("-o".into());
            a.push(self.options.join(","));
        }
        a
    }
}

/// Options only mount(8), systemd or fstab care about.
fn dropped(o: &str) -> bool {
    matches!(
        o,
        "" | "defaults"
            | "_netdev"
            | "nofail"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "rw"
    ) || o.starts_with("x-")
        || o.starts_with("comment=")
}

/// Splits on commas not escaped with a backslash.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Parses a helper's arguments (without argv\[0\]).
pub fn parse(args: &[String]) -> Result<MountCall, String> {
    let mut positional = Vec::new();
    let mut opts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => opts.extend(split_options(it.next().ok_or("-o needs options")?)),
            // mount(8)'s own flags: sloppy, fake, no-mtab, verbose.
            "-s" | "-f" | "-n" | "-v" => {}
            "-t" => {
                it.next();
            }
            o if o.starts_with("-o") => opts.extend(split_options(&o[2..])),
            o if o.starts_with('-') => return Err(format!("unknown flag {o}")),
            p => positional.push(p.to_string()),
        }
    }
    let [store, mountpoint] = <[String; 2]>::try_from(positional).map_err(|p| {
        format!(
            "usage: mount.sopfs STORE MOUNTPOINT [-o OPTIONS] (got {} paths)",
            p.len()
        )
    })?;
    let mut redis = None;
    let mut options = Vec::new();
    for o in opts {
        if let Some(url) = o.strip_prefix("redis=") {
            redis = Some(url.to_string());
        } else if !dropped(&o) {
            options.push(o);
        }
    }
    Ok(MountCall {
        store,
        mountpoint,
        redis,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &str) -> Result<MountCall, String> {
        parse(&args.split(' ').map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn fstab_lines_become_sopfs_mount_calls() {
        let cases: &[(&str, Option<&str>, &[&str])] = &[
            ("/srv/vol /mnt/v", None, &[]),
            (
                "/srv/vol /mnt/v -o rw,_netdev,nofail,x-systemd.automount",
                None,
                &[],
            ),
            (
                "s3://b/p /mnt/v -o redis=rediss://:pw@h:6380/0,allow_other,noatime",
                Some("rediss://:pw@h:6380/0"),
                &["allow_other", "noatime"],
            ),
            ("/srv/vol /mnt/v -s -n -o defaults,ro", None, &["ro"]),
            ("/srv/vol /mnt/v -oallow_other", None, &["allow_other"]),
            (
                "/srv/vol /mnt/v -o redis=redis://h/0?a\\,b,ro",
                Some("redis://h/0?a,b"),
                &["ro"],
            ),
        ];
        for (line, redis, opts) in cases {
            let c = call(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(c.redis.as_deref(), *redis, "{line}");
            assert_eq!(
                c.options,
                opts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{line}"
            );
            assert_eq!(
                c.args()[..4],
                ["mount", c.store.as_str(), "/mnt/v", "--background"]
            );
        }
        assert!(call("/srv/vol").is_err());
        assert!(call("/srv/vol /mnt/v -q").is_err());
    }
}
