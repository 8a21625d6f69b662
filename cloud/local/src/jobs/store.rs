//! Jobs and executions in the [`Store`]: kind `job` keyed by job id (the
//! engine's job and the control-plane record), kind `job_execution` keyed
//! `thing\njob` (the engine's latest execution of the job on the thing).
//! Written after every change, from the engine's [`Changes`].

use cloud_api::jobs::{Changes, Execution, Job, JobsEngine};
use serde::{Deserialize, Serialize};

use super::JobRecord;
use crate::store::{Op, Store, StoreError};

const K_JOB: &str = "job";
const K_EXECUTION: &str = "job_execution";

/// What the `job` kind holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredJob {
    job: Job,
    record: JobRecord,
}

fn execution_key(thing: &str, job: &str) -> String {
    format!("{thing}\n{job}")
}

fn encode(value: &impl Serialize) -> String {
    // Plain structs with string keys: serde_json cannot fail on them.
    serde_json::to_string(value).unwrap_or_default()
}

/// What [`load`] reads: jobs with their records, and executions.
pub(super) type Loaded = (Vec<(Job, JobRecord)>, Vec<Execution>);

/// Every job (with its record) and execution, as last written.
pub(super) fn load(store: &Store) -> Result<Loaded, StoreError> {
    let mut jobs = Vec::new();
    for (key, value) in store.all(K_JOB)? {
        match serde_json::from_str::<StoredJob>(&value) {
            Ok(stored) => jobs.push((stored.job, stored.record)),
            Err(e) => tracing::warn!(job = %key, error = %e, "skipping an unreadable job record"),
        }
    }
    let mut executions = Vec::new();
    for (key, value) in store.all(K_EXECUTION)? {
        match serde_json::from_str::<Execution>(&value) {
            Ok(e) => executions.push(e),
            Err(e) => {
                tracing::warn!(execution = %key.replace('\n', "/"), error = %e, "skipping an unreadable execution")
            }
        }
    }
    Ok((jobs, executions))
}

/// Writes what `changes` names, in one transaction: present → put, gone → delete.
pub(super) fn persist(
    store: &Store,
    engine: &JobsEngine,
    records: &std::collections::BTreeMap<String, JobRecord>,
    changes: &Changes,
) -> Result<(), StoreError> {
    let mut ops = Vec::new();
    for id in &changes.jobs {
        match (engine.job(id), records.get(id)) {
            (Some(job), Some(record)) => {
                let value = encode(&StoredJob { job: job.clone(), record: record.clone() });
                ops.push(Op::Put { kind: K_JOB, key: id.clone(), value });
            }
            _ => ops.push(Op::Delete { kind: K_JOB, key: id.clone() }),
        }
    }
    for (thing, job) in &changes.executions {
        let key = execution_key(thing, job);
        match engine.execution(thing, job) {
            Some(e) => {
                ops.push(Op::Put { kind: K_EXECUTION, key, value: encode(e) });
            }
            None => ops.push(Op::Delete { kind: K_EXECUTION, key }),
        }
    }
    if ops.is_empty() { Ok(()) } else { store.apply(&ops) }
}
