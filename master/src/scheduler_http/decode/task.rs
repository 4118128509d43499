//! The messages inside scheduler calls: FrameworkInfo, offer operations,
//! TaskInfo, Resource, CommandInfo, HealthCheck, filters and kill policies,
//! from protobuf's JSON mapping to `mezzo_proto::v1`.
//!
//! Mesos' defaults apply where a field is absent (a shell command, the
//! health-check timings of mesos.proto), so clients written against Mesos
//! get the behaviour they expect.

use mezzo_proto::v1::{self, operation};
use tracing::debug;

use super::reader::{bad, BadCall, J};

/// Mesos' `Offer.Operation.Type`.
const OPERATION_TYPES: &[(&str, i64)] = &[
    ("LAUNCH", 1),
    ("RESERVE", 2),
    ("UNRESERVE", 3),
    ("CREATE", 4),
    ("DESTROY", 5),
    ("LAUNCH_GROUP", 6),
    ("GROW_VOLUME", 11),
    ("SHRINK_VOLUME", 12),
    ("CREATE_DISK", 13),
    ("DESTROY_DISK", 14),
];

const VALUE_TYPES: &[(&str, i64)] = &[("SCALAR", 0), ("RANGES", 1), ("SET", 2), ("TEXT", 3)];

const HEALTH_TYPES: &[(&str, i64)] = &[("UNKNOWN", 0), ("COMMAND", 1), ("HTTP", 2), ("TCP", 3)];

pub(super) fn ids(j: &J, name: &str) -> Result<Vec<String>, BadCall> {
    j.opt_items(name)?.iter().map(J::id).collect()
}

pub(super) fn filters(j: &J) -> Result<Option<v1::Filters>, BadCall> {
    Ok(match j.opt("filters")? {
        Some(f) => Some(v1::Filters {
            refuse_seconds: f.opt_f64("refuse_seconds")?,
        }),
        None => None,
    })
}

/// `kill_policy.grace_period.nanoseconds` as seconds.
pub(super) fn kill_policy(j: &J) -> Result<Option<f64>, BadCall> {
    let Some(kp) = j.opt("kill_policy")? else {
        return Ok(None);
    };
    let Some(gp) = kp.opt("grace_period")? else {
        return Ok(None);
    };
    let ns = gp.req("nanoseconds")?.i64()?;
    if ns < 0 {
        return Err(bad(format!(
            "'{}.nanoseconds' must not be negative",
            gp.path
        )));
    }
    Ok(Some(ns as f64 / 1e9))
}

pub(super) fn framework_info(j: &J) -> Result<v1::FrameworkInfo, BadCall> {
    let name = j.req("name")?.string()?;
    let mut capabilities = Vec::new();
    for c in j.opt_items("capabilities")? {
        capabilities.push(c.req("type")?.string()?);
    }
    Ok(v1::FrameworkInfo {
        user: j.opt_string("user")?,
        name,
        id: j.opt_id("id")?,
        failover_timeout: j.opt_f64("failover_timeout")?.unwrap_or(0.0),
        checkpoint: j
            .opt("checkpoint")?
            .map(|b| b.bool())
            .transpose()?
            .unwrap_or(false),
        role: j.opt_string("role")?,
        roles: j.opt_strings("roles")?,
        hostname: j.opt_string("hostname")?,
        principal: j.opt_string("principal")?,
        webui_url: j.opt_string("webui_url")?,
        capabilities,
        labels: labels(j)?,
    })
}

fn labels(j: &J) -> Result<Vec<v1::Label>, BadCall> {
    let Some(l) = j.opt("labels")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for x in l.opt_items("labels")? {
        out.push(v1::Label {
            key: x.req("key")?.string()?,
            value: x.opt_string("value")?,
        });
    }
    Ok(out)
}

pub(super) fn offer_operation(j: &J) -> Result<v1::Operation, BadCall> {
    let kind = match j.opt("type")? {
        Some(t) => t.enum_name(OPERATION_TYPES)?,
        None if j.opt("launch")?.is_some() => "LAUNCH",
        None if j.opt("launch_group")?.is_some() => "LAUNCH_GROUP",
        None => {
            return Err(bad(format!(
                "Missing required field '{}'",
                j.child_path("type")
            )))
        }
    };
    let op = match kind {
        "LAUNCH" => {
            let l = j.req("launch")?;
            let mut task_infos = Vec::new();
            for t in l.opt_items("task_infos")? {
                task_infos.push(task_info(&t)?);
            }
            operation::Operation::Launch(operation::Launch { task_infos })
        }
        "LAUNCH_GROUP" => {
            // The group's (default) executor is implied: each task runs
            // under its own Mezzo executor, the group launches atomically.
            let g = j.req("launch_group")?;
            let tg = g.req("task_group")?;
            let mut task_infos = Vec::new();
            for t in tg.opt_items("tasks")? {
                task_infos.push(task_info(&t)?);
            }
            operation::Operation::LaunchGroup(operation::LaunchGroup { task_infos })
        }
        other => {
            return Err(bad(format!(
                "'{}': operation {other} is not supported by Mezzo (only LAUNCH and LAUNCH_GROUP)",
                j.child_path("type")
            )))
        }
    };
    Ok(v1::Operation {
        operation: Some(op),
    })
}

fn task_info(j: &J) -> Result<v1::TaskInfo, BadCall> {
    let name = j.req("name")?.string()?;
    let task_id = j.req("task_id")?.id()?;
    let agent_id = j.req("agent_id")?.id()?;
    let mut resources = Vec::new();
    for r in j.opt_items("resources")? {
        resources.push(resource(&r)?);
    }
    let mut command = j.opt("command")?.map(|c| command_info(&c)).transpose()?;
    if let Some(ex) = j.opt("executor")? {
        // A custom executor: Mezzo runs its command as the task's command
        // under Mezzo's own executor, with the executor's resources added.
        for r in ex.opt_items("resources")? {
            resources.push(resource(&r)?);
        }
        if command.is_none() {
            command = ex.opt("command")?.map(|c| command_info(&c)).transpose()?;
        }
    }
    Ok(v1::TaskInfo {
        name,
        task_id,
        agent_id,
        resources,
        command,
        kill_grace_period_seconds: kill_policy(j)?,
        labels: labels(j)?,
        health_check: j
            .opt("health_check")?
            .map(|h| health_check(&h))
            .transpose()?,
    })
}

fn resource(j: &J) -> Result<v1::Resource, BadCall> {
    let name = j.req("name")?.string()?;
    let kind = match j.opt("type")? {
        Some(t) => t.enum_name(VALUE_TYPES)?,
        None if j.opt("scalar")?.is_some() => "SCALAR",
        None if j.opt("ranges")?.is_some() => "RANGES",
        None if j.opt("set")?.is_some() => "SET",
        None => {
            return Err(bad(format!(
                "Missing required field '{}'",
                j.child_path("type")
            )))
        }
    };
    // Refined reservations (Mesos >= 1.4) win over the deprecated `role`.
    let mut role = j.opt_string("role")?;
    for r in j.opt_items("reservations")? {
        let rr = r.opt_string("role")?;
        if !rr.is_empty() {
            role = rr;
        }
    }
    if role.is_empty() {
        role = "*".into();
    }
    let mut out = v1::Resource {
        name,
        role,
        ..Default::default()
    };
    match kind {
        "SCALAR" => {
            out.r#type = v1::ValueType::Scalar as i32;
            out.scalar = j.req("scalar")?.req("value")?.f64()?;
        }
        "RANGES" => {
            out.r#type = v1::ValueType::Ranges as i32;
            for r in j.req("ranges")?.opt_items("range")? {
                let begin = r.req("begin")?.u64()?;
                let end = r.req("end")?.u64()?;
                if begin > end {
                    return Err(bad(format!("'{}': begin is after end", r.path)));
                }
                out.ranges.push(v1::Range { begin, end });
            }
        }
        "SET" => {
            out.r#type = v1::ValueType::Set as i32;
            out.set = j.req("set")?.opt_strings("item")?;
        }
        _ => {
            return Err(bad(format!(
                "'{}': resources of type {kind} are not supported",
                j.child_path("type")
            )))
        }
    }
    Ok(out)
}

fn command_info(j: &J) -> Result<v1::CommandInfo, BadCall> {
    let mut environment = Vec::new();
    if let Some(env) = j.opt("environment")? {
        for var in env.opt_items("variables")? {
            environment.push(v1::EnvironmentVariable {
                name: var.req("name")?.string()?,
                value: var.opt_string("value")?,
            });
        }
    }
    if !j.opt_items("uris")?.is_empty() {
        // Mezzo has no fetcher; the command runs without them.
        debug!(path = %j.path, "command.uris ignored: Mezzo does not fetch URIs");
    }
    Ok(v1::CommandInfo {
        value: j.opt_string("value")?,
        // Mesos' default is a shell command.
        shell: j
            .opt("shell")?
            .map(|b| b.bool())
            .transpose()?
            .unwrap_or(true),
        arguments: j.opt_strings("arguments")?,
        environment,
        user: j.opt_string("user")?,
    })
}

fn health_check(j: &J) -> Result<v1::HealthCheck, BadCall> {
    let kind = match j.opt("type")? {
        Some(t) => t.enum_name(HEALTH_TYPES)?,
        None if j.opt("command")?.is_some() => "COMMAND",
        None if j.opt("http")?.is_some() => "HTTP",
        None if j.opt("tcp")?.is_some() => "TCP",
        None => "UNKNOWN",
    };
    // Mesos' defaults (mesos.proto HealthCheck).
    let mut h = v1::HealthCheck {
        delay_seconds: j.opt_f64("delay_seconds")?.unwrap_or(15.0),
        interval_seconds: j.opt_f64("interval_seconds")?.unwrap_or(10.0),
        timeout_seconds: j.opt_f64("timeout_seconds")?.unwrap_or(20.0),
        consecutive_failures: match j.opt("consecutive_failures")? {
            Some(n) => u32::try_from(n.u64()?).unwrap_or(u32::MAX),
            None => 3,
        },
        grace_period_seconds: j.opt_f64("grace_period_seconds")?.unwrap_or(10.0),
        ..Default::default()
    };
    let port = |p: &J| -> Result<u32, BadCall> {
        u32::try_from(p.req("port")?.u64()?)
            .map_err(|_| bad(format!("'{}.port' is out of range", p.path)))
    };
    match kind {
        "COMMAND" => {
            h.r#type = v1::HealthCheckType::HealthCheckCommand as i32;
            h.command = j.req("command")?.req("value")?.string()?;
        }
        "HTTP" => {
            let http = j.req("http")?;
            h.r#type = v1::HealthCheckType::HealthCheckHttp as i32;
            h.port = port(&http)?;
            h.path = http.opt_string("path")?;
            if h.path.is_empty() {
                h.path = "/".into();
            }
        }
        "TCP" => {
            let tcp = j.req("tcp")?;
            h.r#type = v1::HealthCheckType::HealthCheckTcp as i32;
            h.port = port(&tcp)?;
        }
        _ => {
            return Err(bad(format!(
                "Missing required field '{}'",
                j.child_path("type")
            )))
        }
    }
    Ok(h)
}
