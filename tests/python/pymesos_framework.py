#!/usr/bin/env python3
"""A small, unmodified-pymesos scheduler run against a Mezzo master.

Usage: pymesos_framework.py MASTER [TASKS]

MASTER is `host:port` (or `zk://host:port/path` once masters register in
ZooKeeper). The scheduler subscribes over Mesos' v1 HTTP scheduler API,
launches TASKS (default 5) `sleep 1` tasks from the offers it gets, using the
command-executor style TaskInfo (a `command`, no `executor`), waits for
TASK_RUNNING and TASK_FINISHED of each (pymesos acknowledges every update
carrying a uuid: implicit acknowledgements), then stops (TEARDOWN) and exits
0. Any other terminal state, an ERROR event or the deadline exits 1.

Prints one line per event so a failing test shows what happened.
"""

import logging
import os
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler

CPUS = 0.1
MEM = 32
DEADLINE = float(os.environ.get("PYMESOS_DEADLINE", "90"))


def log(msg):
    print("pymesos-framework: %s" % msg, flush=True)


def scalar(resources, name):
    return sum(
        r["scalar"]["value"]
        for r in resources
        if r["name"] == name and r.get("type", "SCALAR") == "SCALAR"
    )


class SleepScheduler(Scheduler):
    def __init__(self, want):
        self.want = want
        self.launched = 0
        self.states = {}
        self.registered_id = None
        self.failure = None
        self.done = threading.Event()
        self.lock = threading.Lock()

    def registered(self, driver, framework_id, master_info):
        self.registered_id = framework_id["value"]
        log("registered %s with master %s" % (framework_id["value"], master_info))

    def reregistered(self, driver, master_info):
        log("reregistered with master %s" % (master_info,))

    def resourceOffers(self, driver, offers):
        for offer in offers:
            with self.lock:
                cpus = scalar(offer["resources"], "cpus")
                mem = scalar(offer["resources"], "mem")
                tasks = []
                while (
                    self.launched < self.want and cpus >= CPUS and mem >= MEM
                ):
                    task_id = "sleep-%d" % self.launched
                    self.launched += 1
                    cpus -= CPUS
                    mem -= MEM
                    tasks.append(
                        dict(
                            task_id=dict(value=task_id),
                            agent_id=dict(value=offer["agent_id"]["value"]),
                            name="sleep %s" % task_id,
                            resources=[
                                dict(name="cpus", type="SCALAR", scalar=dict(value=CPUS)),
                                dict(name="mem", type="SCALAR", scalar=dict(value=MEM)),
                            ],
                            command=dict(value="sleep 1", shell=True),
                        )
                    )
            if tasks:
                log("launching %s on offer %s" % (
                    [t["task_id"]["value"] for t in tasks], offer["id"]["value"]))
                driver.launchTasks(offer["id"], tasks, filters=dict(refuse_seconds=1))
            else:
                driver.declineOffer(offer["id"], filters=dict(refuse_seconds=60))

    def statusUpdate(self, driver, update):
        task_id = update["task_id"]["value"]
        state = update["state"]
        log("update %s %s uuid=%s %s" % (
            task_id, state, "uuid" in update, update.get("message", "")))
        with self.lock:
            self.states.setdefault(task_id, []).append(state)
            if state in ("TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
                         "TASK_DROPPED", "TASK_GONE"):
                self.failure = "%s ended %s: %s" % (task_id, state, update.get("message"))
                self.done.set()
                return
            finished = [
                t for t, s in self.states.items()
                if "TASK_FINISHED" in s and "TASK_RUNNING" in s
            ]
            if len(finished) == self.want:
                self.done.set()

    def error(self, driver, message):
        log("error: %s" % message)
        self.failure = "ERROR event: %s" % message
        self.done.set()


def main():
    logging.basicConfig(level=logging.WARNING)
    master = sys.argv[1]
    want = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    framework = dict(user="", name="pymesos-sleep", hostname="localhost")
    sched = SleepScheduler(want)
    driver = MesosSchedulerDriver(sched, framework, master, use_addict=False)
    driver.start()
    ok = sched.done.wait(DEADLINE)
    driver.stop()
    driver.join()
    if not ok:
        log("timed out; states: %s" % sched.states)
        return 1
    if sched.failure:
        log("failed: %s; states: %s" % (sched.failure, sched.states))
        return 1
    for task_id, states in sorted(sched.states.items()):
        log("%s: %s" % (task_id, " ".join(states)))
    log("all %d tasks finished" % want)
    return 0


if __name__ == "__main__":
    start = time.time()
    code = main()
    log("exit %d after %.1fs" % (code, time.time() - start))
    sys.exit(code)
