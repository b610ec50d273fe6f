//! process.scheduler, process.ioPriority and linux.personality, validated as runc does and
//! turned into the raw values the init helper hands to sched_setattr(2), ioprio_set(2) and
//! personality(2).

use oci_spec::runtime::{
    IOPriorityClass, LinuxPersonalityDomain, LinuxSchedulerFlag as Fl, LinuxSchedulerPolicy as P,
};
use serde::{Deserialize, Serialize};

/// `struct sched_attr`'s fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SchedPlan {
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

pub fn scheduler(s: &oci_spec::runtime::Scheduler) -> Result<SchedPlan, String> {
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => return Err("process.scheduler: SCHED_ISO is not in Linux".into()),
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let priority = s.priority().unwrap_or(0);
    let realtime = policy == 1 || policy == 2;
    if realtime && !(1..=99).contains(&priority) {
        return Err(format!(
            "process.scheduler: priority {priority} must be 1-99 for SCHED_FIFO/SCHED_RR"
        ));
    }
    if !realtime && priority != 0 {
        return Err(format!(
            "process.scheduler: priority {priority} needs SCHED_FIFO or SCHED_RR"
        ));
    }
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(format!("process.scheduler: nice {nice} is not in -20..19"));
    }
    let (runtime, deadline, period) = (
        s.runtime().unwrap_or(0),
        s.deadline().unwrap_or(0),
        s.period().unwrap_or(0),
    );
    if policy == 6 && (runtime == 0 || deadline == 0) {
        return Err("process.scheduler: SCHED_DEADLINE needs runtime and deadline".into());
    }
    let mut flags = 0;
    for f in s.flags().as_deref().unwrap_or_default() {
        flags |= match f {
            Fl::SchedResetOnFork => 0x01,
            Fl::SchedFlagReclaim => 0x02,
            Fl::SchedFlagDLOverrun => 0x04,
            Fl::SchedFlagKeepPolicy => 0x08,
            Fl::SchedFlagKeepParams => 0x10,
            Fl::SchedFlagUtilClampMin => 0x20,
            Fl::SchedFlagUtilClampMax => 0x40,
        };
    }
    Ok(SchedPlan {
        policy,
        flags,
        nice,
        priority: priority as u32,
        runtime,
        deadline,
        period,
    })
}

/// The value for ioprio_set(IOPRIO_WHO_PROCESS, 0, value).
pub fn io_priority(p: &oci_spec::runtime::LinuxIOPriority) -> Result<u32, String> {
    let class = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&p.priority()) {
        return Err(format!(
            "process.ioPriority: priority {} is not in 0..7",
            p.priority()
        ));
    }
    Ok((class << 13) | p.priority() as u32)
}

/// The value for personality(2).
pub fn personality(p: &oci_spec::runtime::LinuxPersonality) -> Result<u64, String> {
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err("linux.personality.flags are not supported (runc has none either)".into());
    }
    Ok(match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn validates_like_runc() {
        let s = scheduler(&from(
            serde_json::json!({"policy": "SCHED_BATCH", "nice": 5}),
        ))
        .unwrap();
        assert_eq!((s.policy, s.nice, s.priority), (3, 5, 0));
        let s = scheduler(&from(
            serde_json::json!({"policy": "SCHED_FIFO", "priority": 10,
            "flags": ["SCHED_RESET_ON_FORK"]}),
        ))
        .unwrap();
        assert_eq!((s.policy, s.priority, s.flags), (1, 10, 1));
        assert!(scheduler(&from(serde_json::json!({"policy": "SCHED_RR"}))).is_err());
        assert!(scheduler(&from(
            serde_json::json!({"policy": "SCHED_OTHER", "priority": 3})
        ))
        .is_err());
        assert!(scheduler(&from(serde_json::json!({"policy": "SCHED_DEADLINE"}))).is_err());
        let io = io_priority(&from(
            serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 4}),
        ))
        .unwrap();
        assert_eq!(io, (3 << 13) | 4);
        assert!(io_priority(&from(
            serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 9})
        ))
        .is_err());
        assert_eq!(
            personality(&from(serde_json::json!({"domain": "LINUX32"}))).unwrap(),
            8
        );
    }
}
