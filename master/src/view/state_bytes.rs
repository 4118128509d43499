//! `/master/state` as bytes written by hand where the document is big:
//! the same bytes as serializing [`super::state::StateJson`], faster.
//!
//! Going through serde costs a call per key and scans every key for
//! characters to escape. Tasks are nearly all of a large document, and their
//! keys are constants, so [`state_bytes`] writes tasks and frameworks as
//! literal fragments and leaves the rest (agents, flags, offers) to the
//! `Serialize` views of `state.rs`, appending to one buffer.

use mezzo_proto::v1::TaskState;
use mezzo_proto::Resources;
use serde::Serialize;

use super::state::*;
use super::Snapshot;
use crate::state::{Framework, Task};

/// `/master/state` as bytes, the same as `serde_json::to_vec(&StateJson)`.
pub(crate) fn state_bytes(snap: &Snapshot) -> serde_json::Result<Vec<u8>> {
    let tasks: usize = snap
        .frameworks
        .values()
        .chain(snap.completed_frameworks.iter())
        .map(|f| f.tasks.len() + f.completed.len())
        .sum();
    // About 420 bytes a task: sized once, the buffer is never copied.
    let mut out = Vec::with_capacity(64 * 1024 + tasks * 448 + snap.agents.len() * 1024);
    let info = &snap.info;
    let leader_pid = format!("master@{}:{}", info.ip, info.port);
    let leader = snap
        .leader
        .as_ref()
        .map(|h| format!("master@{h}"))
        .or_else(|| snap.leading.then(|| leader_pid.clone()));
    let reachable = snap.agents.values().filter(|a| a.reachable).count();
    let o = &mut out;
    o.extend_from_slice(b"{\"activated_slaves\":");
    json(o, &reachable)?;
    o.extend_from_slice(
        b",\"build_date\":\"\",\"build_time\":0,\"build_user\":\"mezzo\",\
          \"capabilities\":[],\"cluster\":\"\",\"completed_frameworks\":[",
    );
    for (i, f) in snap.completed_frameworks.iter().enumerate() {
        comma(o, i);
        framework_bytes(o, snap, f, false)?;
    }
    o.extend_from_slice(b"],\"deactivated_slaves\":0,\"elected_time\":");
    json(o, &snap.elected_time)?;
    o.extend_from_slice(b",\"flags\":");
    json(o, &flags_json(snap))?;
    o.extend_from_slice(b",\"frameworks\":[");
    for (i, f) in snap.frameworks.values().enumerate() {
        comma(o, i);
        framework_bytes(o, snap, f, true)?;
    }
    o.extend_from_slice(b"],\"git_branch\":\"\",\"git_sha\":\"\",\"hostname\":");
    string(o, &info.hostname)?;
    o.extend_from_slice(b",\"id\":");
    string(o, &info.id)?;
    o.extend_from_slice(b",\"leader\":");
    json(o, &leader)?;
    o.extend_from_slice(b",\"leader_info\":");
    json(o, &master_info_json(info))?;
    o.extend_from_slice(b",\"leading\":");
    json(o, &snap.leading)?;
    o.extend_from_slice(b",\"log_dir\":\"\",\"mezzo_version\":");
    string(o, env!("CARGO_PKG_VERSION"))?;
    o.extend_from_slice(b",\"orphan_tasks\":[],\"pid\":");
    string(o, &leader_pid)?;
    o.extend_from_slice(b",\"recovered_slaves\":[],\"slaves\":");
    json(o, &Agents(snap))?;
    o.extend_from_slice(b",\"start_time\":");
    json(o, &snap.start_time)?;
    o.extend_from_slice(b",\"unreachable_slaves\":");
    json(o, &(snap.agents.len() - reachable))?;
    o.extend_from_slice(b",\"unregistered_frameworks\":[],\"version\":");
    string(o, crate::MESOS_COMPAT_VERSION)?;
    o.push(b'}');
    Ok(out)
}

/// Appends `v` as serde_json writes it.
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> serde_json::Result<()> {
    serde_json::to_writer(out, v)
}

fn comma(out: &mut Vec<u8>, i: usize) {
    if i > 0 {
        out.push(b',');
    }
}

/// A JSON string; ids and names rarely need escaping, so they are checked
/// with one pass and copied, and serde_json escapes the rest.
fn string(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        json(out, s)
    }
}

fn flat_bytes(out: &mut Vec<u8>, r: &Resources) -> serde_json::Result<()> {
    match r.common_scalars_only() {
        Some([cpus, mem, disk, gpus]) => {
            out.extend_from_slice(b"{\"cpus\":");
            json(out, &millis(cpus))?;
            out.extend_from_slice(b",\"disk\":");
            json(out, &millis(disk))?;
            out.extend_from_slice(b",\"gpus\":");
            json(out, &millis(gpus))?;
            out.extend_from_slice(b",\"mem\":");
            json(out, &millis(mem))?;
            out.push(b'}');
            Ok(())
        }
        None => json(out, &FlatJson(r)),
    }
}

/// [`TaskJson`] by hand.
fn task_bytes(out: &mut Vec<u8>, t: &Task) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"agent_id\":");
    string(out, &t.agent_id)?;
    out.extend_from_slice(b",\"executor_id\":\"\",\"framework_id\":");
    string(out, &t.framework_id)?;
    out.extend_from_slice(b",\"id\":");
    string(out, &t.info.task_id)?;
    out.extend_from_slice(b",\"labels\":[");
    for (i, l) in t.info.labels.iter().enumerate() {
        comma(out, i);
        out.extend_from_slice(b"{\"key\":");
        string(out, &l.key)?;
        out.extend_from_slice(b",\"value\":");
        string(out, &l.value)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"name\":");
    string(out, &t.info.name)?;
    out.extend_from_slice(b",\"resources\":");
    flat_bytes(out, &t.resources)?;
    out.extend_from_slice(b",\"slave_id\":");
    string(out, &t.agent_id)?;
    out.extend_from_slice(b",\"state\":");
    string(out, t.state.as_str_name())?;
    out.extend_from_slice(b",\"statuses\":[");
    for (i, (state, ts)) in t.statuses.iter().enumerate() {
        comma(out, i);
        out.extend_from_slice(b"{\"state\":");
        string(out, state.as_str_name())?;
        out.extend_from_slice(b",\"timestamp\":");
        json(out, ts)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

/// [`FrameworkJson`] by hand.
fn framework_bytes(
    out: &mut Vec<u8>,
    snap: &Snapshot,
    f: &Framework,
    active: bool,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"active\":");
    json(out, &(active && f.connected))?;
    out.extend_from_slice(b",\"capabilities\":");
    json(out, &f.info.capabilities)?;
    out.extend_from_slice(b",\"checkpoint\":");
    json(out, &f.info.checkpoint)?;
    out.extend_from_slice(b",\"completed_tasks\":[");
    for (i, t) in f.completed.iter().enumerate() {
        comma(out, i);
        task_bytes(out, t)?;
    }
    out.extend_from_slice(b"],\"connected\":");
    json(out, &f.connected)?;
    out.extend_from_slice(b",\"executors\":[],\"failover_timeout\":");
    json(out, &f.info.failover_timeout)?;
    out.extend_from_slice(b",\"hostname\":");
    string(out, &f.info.hostname)?;
    out.extend_from_slice(b",\"id\":");
    string(out, &f.id)?;
    out.extend_from_slice(b",\"labels\":[],\"name\":");
    string(out, &f.info.name)?;
    out.extend_from_slice(b",\"offered_resources\":");
    flat_bytes(out, &f.offered)?;
    out.extend_from_slice(b",\"offers\":");
    json(
        out,
        &Seq(|| {
            f.offers
                .iter()
                .filter_map(|id| snap.offers.get(id).map(|o| OfferJson { id, o }))
        }),
    )?;
    out.extend_from_slice(b",\"pid\":null,\"principal\":");
    string(out, &f.info.principal)?;
    out.extend_from_slice(b",\"recovered\":false,\"registered_time\":");
    json(out, &f.registered_time)?;
    out.extend_from_slice(b",\"resources\":");
    flat_bytes(out, &f.used.plus(&f.offered))?;
    out.extend_from_slice(b",\"role\":");
    string(out, &f.role)?;
    out.extend_from_slice(b",\"roles\":[");
    string(out, &f.role)?;
    for unreachable in [false, true] {
        out.extend_from_slice(if unreachable {
            b"],\"unreachable_tasks\":["
        } else {
            b"],\"tasks\":["
        });
        let mut i = 0;
        for t in f.tasks.values() {
            if (t.state == TaskState::TaskUnreachable) == unreachable {
                comma(out, i);
                i += 1;
                task_bytes(out, t)?;
            }
        }
    }
    out.extend_from_slice(b"],\"unregistered_time\":");
    json(out, &f.unregistered_time.unwrap_or(0.0))?;
    out.extend_from_slice(b",\"used_resources\":");
    flat_bytes(out, &f.used)?;
    out.extend_from_slice(b",\"user\":");
    string(out, &f.info.user)?;
    out.extend_from_slice(b",\"webui_url\":");
    string(out, &f.info.webui_url)?;
    out.push(b'}');
    Ok(())
}
