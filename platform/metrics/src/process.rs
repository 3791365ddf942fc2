//! The process's own metrics, read from Linux's `/proc` at each scrape and written in
//! the Prometheus text format by hand (the CPU counter is fractional, which the `metrics`
//! facade's integer counters are not). Elsewhere (no `/proc`) they are left out.

use std::fmt::Write;

use crate::names;

/// Clock ticks per second of `/proc/<pid>/stat` times: USER_HZ, 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc` says about this process now.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl Sample {
    /// This process now; `None` without `/proc`.
    pub fn now() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let (cpu_ticks, start_ticks) = parse_stat(&stat)?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| field(&s, "btime").and_then(|v| v.parse::<f64>().ok()));
        Some(Sample {
            cpu_seconds: cpu_ticks as f64 / TICKS_PER_SECOND,
            resident_bytes: kilobytes(&status, "VmRSS:"),
            virtual_bytes: kilobytes(&status, "VmSize:"),
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|l| max_open_files(&l)),
            start_time_seconds: boot.map(|b| b + start_ticks as f64 / TICKS_PER_SECOND),
        })
    }

    /// Appends the sample as Prometheus text.
    pub fn write(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        };
        let help = "User and system CPU time spent in seconds.";
        metric(
            names::PROCESS_CPU_SECONDS,
            "counter",
            help,
            self.cpu_seconds,
        );
        let help = "Resident memory size in bytes.";
        metric(
            names::PROCESS_RESIDENT_MEMORY,
            "gauge",
            help,
            self.resident_bytes as f64,
        );
        let help = "Virtual memory size in bytes.";
        metric(
            names::PROCESS_VIRTUAL_MEMORY,
            "gauge",
            help,
            self.virtual_bytes as f64,
        );
        let help = "Number of open file descriptors.";
        metric(names::PROCESS_OPEN_FDS, "gauge", help, self.open_fds as f64);
        if let Some(max) = self.max_fds {
            let help = "Maximum number of open file descriptors.";
            metric(names::PROCESS_MAX_FDS, "gauge", help, max as f64);
        }
        if let Some(start) = self.start_time_seconds {
            let help = "Start time of the process since unix epoch in seconds.";
            metric(names::PROCESS_START_TIME, "gauge", help, start);
        }
    }
}

/// CPU ticks (user + system) and the start time in ticks after boot, from
/// `/proc/self/stat` (fields 14, 15 and 22; the command name in field 2 may hold spaces
/// and parentheses, so fields are counted from its closing parenthesis).
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let at = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((at(14)? + at(15)?, at(22)?))
}

/// The value after `key` on its line.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .map(str::trim)
}

/// A `/proc/self/status` line `key   1234 kB`, in bytes.
fn kilobytes(status: &str, key: &str) -> u64 {
    field(status, key)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    field(limits, "Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Appends this process's metrics to `out` (nothing without `/proc`).
pub fn write(out: &mut String) {
    if let Some(sample) = Sample::now() {
        sample.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (tokio (rt) worker) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 8 0 \
                    123456 1000 200 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((200, 123_456)));
    }

    #[test]
    fn status_and_limits_are_read() {
        let status = "Name:\tpopug\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(kilobytes(status, "VmRSS:"), 10_240 * 1024);
        assert_eq!(kilobytes(status, "VmSize:"), 204_800 * 1024);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_has_a_sample() {
        let sample = Sample::now().expect("tests run on Linux");
        assert!(sample.resident_bytes > 0);
        assert!(sample.open_fds > 0);
        let mut text = String::new();
        sample.write(&mut text);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
    }
}
