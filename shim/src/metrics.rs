//! The runtime's cgroup snapshot as containerd's Metrics messages: `io.containerd.cgroups.v1.Metrics`
//! or `io.containerd.cgroups.v2.Metrics`, the only types CRI's stats accept.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use crt_runtime::cgroups::stats::Stats;

/// Copy memory.stat keys into same-named (or renamed) fields.
macro_rules! from_stat {
    ($stat:expr, $msg:expr, { $($field:ident $(= $key:literal)?),* $(,)? }) => {
        $( $msg.$field = $stat.get(from_stat!(@key $field $($key)?)).copied().unwrap_or(0); )*
    };
    (@key $field:ident $key:literal) => { $key };
    (@key $field:ident) => { stringify!($field) };
}

pub fn to_any(s: &Stats) -> Result<Any, String> {
    let (type_url, value) = if s.v2 {
        (
            "io.containerd.cgroups.v2.Metrics",
            v2_metrics(s).write_to_bytes(),
        )
    } else {
        (
            "io.containerd.cgroups.v1.Metrics",
            v1_metrics(s).write_to_bytes(),
        )
    };
    Ok(Any {
        type_url: type_url.to_string(),
        value: value.map_err(|e| e.to_string())?,
        ..Default::default()
    })
}

fn v1_metrics(s: &Stats) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    m.pids = MessageField::some(v1::PidsStat {
        current: s.pids_current,
        limit: s.pids_limit,
        ..Default::default()
    });
    m.cpu = MessageField::some(v1::CPUStat {
        usage: MessageField::some(v1::CPUUsage {
            total: s.cpu_usage_ns,
            kernel: s.cpu_system_ns,
            user: s.cpu_user_ns,
            per_cpu: s.cpu_per_cpu_ns.clone(),
            ..Default::default()
        }),
        throttling: MessageField::some(v1::Throttle {
            periods: s.cpu_periods,
            throttled_periods: s.cpu_throttled_periods,
            throttled_time: s.cpu_throttled_ns,
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut mem = v1::MemoryStat::new();
    let st = &s.memory_stat;
    from_stat!(st, mem, {
        cache, rss, rss_huge, mapped_file, dirty, writeback,
        pg_pg_in = "pgpgin", pg_pg_out = "pgpgout", pg_fault = "pgfault", pg_maj_fault = "pgmajfault",
        inactive_anon, active_anon, inactive_file, active_file, unevictable,
        hierarchical_memory_limit, hierarchical_swap_limit = "hierarchical_memsw_limit",
        total_cache, total_rss, total_rss_huge, total_mapped_file, total_dirty, total_writeback,
        total_pg_pg_in = "total_pgpgin", total_pg_pg_out = "total_pgpgout",
        total_pg_fault = "total_pgfault", total_pg_maj_fault = "total_pgmajfault",
        total_inactive_anon, total_active_anon, total_inactive_file, total_active_file,
        total_unevictable,
    });
    mem.usage = MessageField::some(v1::MemoryEntry {
        limit: s.memory_limit,
        usage: s.memory_usage,
        max: s.memory_max_usage,
        failcnt: s.memory_failcnt,
        ..Default::default()
    });
    mem.swap = MessageField::some(v1::MemoryEntry {
        limit: s.swap_limit,
        usage: s.swap_usage,
        ..Default::default()
    });
    m.memory = MessageField::some(mem);
    let ev = &s.memory_events;
    m.memory_oom_control = MessageField::some(v1::MemoryOomControl {
        oom_kill_disable: ev.get("oom_kill_disable").copied().unwrap_or(0),
        under_oom: ev.get("under_oom").copied().unwrap_or(0),
        oom_kill: ev.get("oom_kill").copied().unwrap_or(0),
        ..Default::default()
    });
    m
}

fn v2_metrics(s: &Stats) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = MessageField::some(v2::PidsStat {
        current: s.pids_current,
        limit: s.pids_limit,
        ..Default::default()
    });
    m.cpu = MessageField::some(v2::CPUStat {
        usage_usec: s.cpu_usage_ns / 1000,
        user_usec: s.cpu_user_ns / 1000,
        system_usec: s.cpu_system_ns / 1000,
        nr_periods: s.cpu_periods,
        nr_throttled: s.cpu_throttled_periods,
        throttled_usec: s.cpu_throttled_ns / 1000,
        ..Default::default()
    });
    let mut mem = v2::MemoryStat::new();
    let st = &s.memory_stat;
    from_stat!(st, mem, {
        anon, file, kernel_stack, slab, sock, shmem, file_mapped, file_dirty, file_writeback,
        anon_thp, inactive_anon, active_anon, inactive_file, active_file, unevictable,
        slab_reclaimable, slab_unreclaimable, pgfault, pgmajfault, workingset_refault,
        workingset_activate, workingset_nodereclaim, pgrefill, pgscan, pgsteal, pgactivate,
        pgdeactivate, pglazyfree, pglazyfreed, thp_fault_alloc, thp_collapse_alloc,
    });
    mem.usage = s.memory_usage;
    mem.usage_limit = s.memory_limit;
    mem.swap_usage = s.swap_usage;
    mem.swap_limit = s.swap_limit;
    mem.max_usage = s.memory_max_usage;
    m.memory = MessageField::some(mem);
    let ev = &s.memory_events;
    m.memory_events = MessageField::some(v2::MemoryEvents {
        low: ev.get("low").copied().unwrap_or(0),
        high: ev.get("high").copied().unwrap_or(0),
        max: ev.get("max").copied().unwrap_or(0),
        oom: ev.get("oom").copied().unwrap_or(0),
        oom_kill: ev.get("oom_kill").copied().unwrap_or(0),
        ..Default::default()
    });
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_and_fields_containerd_decodes() {
        let mut s = Stats {
            pids_current: 2,
            memory_usage: 4096,
            cpu_usage_ns: 5000,
            ..Default::default()
        };
        s.memory_stat.insert("pgfault".into(), 7);
        s.memory_stat.insert("total_inactive_file".into(), 9);
        let a = to_any(&s).unwrap();
        assert_eq!(a.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&a.value).unwrap();
        assert_eq!(m.pids.current, 2);
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!((m.memory.pg_fault, m.memory.total_inactive_file), (7, 9));
        s.v2 = true;
        let a = to_any(&s).unwrap();
        assert_eq!(a.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&a.value).unwrap();
        assert_eq!(
            (m.memory.usage, m.memory.pgfault, m.cpu.usage_usec),
            (4096, 7, 5)
        );
    }
}
