//! What this process uses, read from /proc (Linux) when `/metrics` is scraped; zeros elsewhere.

/// CPU, memory and descriptors of this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User and system CPU, seconds.
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    pub open_fds: u64,
}

impl Usage {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // After `(comm)` (which may hold spaces), utime and stime are fields 14 and 15 of the line.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // The kernel's USER_HZ is 100 on every Linux this runs on.
        let cpu_secs = (ticks(11) + ticks(12)) as f64 / 100.0;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        Self { cpu_secs, rss_bytes: rss_kib * 1024, open_fds }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        let u = super::Usage::now();
        assert!(u.rss_bytes > 1024 * 1024, "{u:?}");
        assert!(u.open_fds >= 3, "stdin, stdout, stderr at least: {u:?}");
        // Burn a little CPU: the figure never goes back.
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(super::Usage::now().cpu_secs >= u.cpu_secs);
    }
}
