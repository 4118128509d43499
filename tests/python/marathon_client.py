"""Drives Mezzo's Marathon API with the unmodified `marathon` PyPI client (0.13).

Usage: marathon_client.py http://127.0.0.1:PORT
Prints "ALL OK" when every call worked; any exception fails the test.
"""
import collections
import collections.abc
import sys
import time

# marathon 0.13 still uses `collections.Iterable`, removed in Python 3.10; restore the
# alias so the unmodified client runs on a current Python (a client bug, not the API's).
if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable

from marathon import MarathonClient
from marathon.models import MarathonApp, MarathonHealthCheck

URL = sys.argv[1]
client = MarathonClient([URL])


def wait(what, pred, timeout=45):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


assert client.ping().strip() in (b"pong", b'"pong"'), client.ping()
info = client.get_info()
assert info.name == "marathon", info
assert client.get_leader()["leader"]

app = MarathonApp(
    cmd="sleep 1000",
    cpus=0.1,
    mem=32,
    instances=1,
    labels={"team": "mezzo"},
    health_checks=[MarathonHealthCheck(protocol="COMMAND", command="true",
                                       interval_seconds=1, grace_period_seconds=10,
                                       timeout_seconds=1, max_consecutive_failures=3,
                                       delay_seconds=0)],
)
created = client.create_app("py-app", app)
assert created, "create_app returned False (status was not 201)"
assert created.id == "/py-app", created.id

apps = client.list_apps()
assert [a.id for a in apps] == ["/py-app"], apps
assert [a.id for a in client.list_apps(label="team==mezzo")] == ["/py-app"]
assert client.list_apps(app_id="nothing") == []

wait("1 running task", lambda: client.get_app("py-app").tasks_running == 1)
wait("1 healthy task", lambda: client.get_app("py-app").tasks_healthy == 1)

client.scale_app("py-app", instances=2)
wait("2 running tasks", lambda: client.get_app("py-app").tasks_running == 2
     and not client.get_app("py-app").deployments)

tasks = client.list_tasks("py-app")
assert len(tasks) == 2, tasks
assert all(t.app_id == "/py-app" for t in tasks)
assert len(client.list_tasks()) == 2
assert tasks[0].health_check_results, tasks[0]

# Update (a config change: rolling restart); the deployment is listed meanwhile.
updated = client.get_app("py-app")
updated.cmd = "sleep 2000"
result = client.update_app("py-app", updated)
assert "deploymentId" in result, result
deployments = client.list_deployments()
assert all(d.id for d in deployments)
wait("the update to finish", lambda: not client.list_deployments()
     and client.get_app("py-app").cmd == "sleep 2000"
     and client.get_app("py-app").tasks_healthy == 2)

# Kill one task: it is replaced.
victim = client.list_tasks("py-app")[0]
killed = client.kill_task("py-app", victim.id)
assert killed.id == victim.id, killed
wait("a replacement task", lambda: len(client.list_tasks("py-app")) == 2
     and victim.id not in [t.id for t in client.list_tasks("py-app")]
     and client.get_app("py-app").tasks_running == 2 and not client.list_deployments())

# Kill given tasks with scale: one fewer instance.
one = client.list_tasks("py-app")[0]
assert client.kill_given_tasks([one.id], scale=True)
wait("scaled down to 1", lambda: client.get_app("py-app").instances == 1
     and client.get_app("py-app").tasks_running == 1 and not client.list_deployments())

client.restart_app("py-app")
wait("restart to finish", lambda: not client.list_deployments())
versions = client.list_versions("py-app")
assert len(versions) >= 3, versions
assert client.get_version("py-app", versions[-1]).id == "/py-app"
client.list_queue()

client.delete_app("py-app", force=True)
wait("the app to be gone", lambda: client.list_apps() == [] and client.list_tasks() == [])
print("ALL OK")
