"""A local, real Apache Kafka (KRaft, one node) and redis-server, for the demo and the tests.

No Docker: Kafka's jars come from Maven Central (resolved once with `mvn` into a cache) and run
with `java -cp`; redis-server is Debian's package (installed with apt-get when missing and root).
Everything a stack writes (config, data, logs, pids) lives under one state directory, and `down`
stops exactly the processes that `up` recorded there. The broker settings here are the ones
docker-compose.yml gives the apache/kafka image.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import redis
from confluent_kafka.admin import AdminClient

from schemas.errors import AnnrecError

KAFKA_VERSION = "4.1.1"
# Kafka's jar leaves the SLF4J binding out (KAFKA-18466); 4.1.1 uses slf4j 1.7 and log4j 2.24.3.
LOG4J_BINDING = "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3"
CLUSTER_ID = "MkU3OEVBNTcwNTJENDM2Qk"  # fixed: saves one JVM start for `random-uuid`
STATE_FILE = "stack.json"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>annrec</groupId><artifactId>kafka-classpath</artifactId><version>0</version>
<packaging>pom</packaging><dependencies>
<dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
<version>{kafka}</version><scope>runtime</scope></dependency>
<dependency><groupId>{lg}</groupId><artifactId>{la}</artifactId><version>{lv}</version>
<scope>runtime</scope></dependency></dependencies>
<build><plugins><plugin><groupId>org.apache.maven.plugins</groupId>
<artifactId>maven-dependency-plugin</artifactId><version>3.6.1</version></plugin></plugins></build>
</project>
"""

_LOG4J2 = """appender.f.type=File
appender.f.name=F
appender.f.fileName=${sys:kafka.logs.dir}/server.log
appender.f.layout.type=PatternLayout
appender.f.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.f.ref=F
"""

# Single-node KRaft. Internal topics get replication 1 and few partitions, the rebalance delay is
# 0 (a lone test worker should not wait 3 s for company). Same values as docker-compose.yml.
_SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=8388608
"""


@dataclass(frozen=True)
class Spawned:
    """A process we started: the pid and its start time (clock ticks since boot) name it."""

    pid: int
    started: int

    def alive(self) -> bool:
        """Alive (not a zombie) and the very process we spawned: same pid *and* start time.

        The command line cannot tell (redis-server rewrites its process title), and a pid alone
        may have been reused since `up`.
        """
        stat = _proc_stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.started


@dataclass(frozen=True)
class StackInfo:
    kafka_bootstrap: str
    redis_url: str
    kafka: Spawned
    redis: Spawned

    def exports(self) -> str:
        return (
            f"export ANNREC_KAFKA_BOOTSTRAP={self.kafka_bootstrap}\n"
            f"export ANNREC_REDIS_URL={self.redis_url}\n"
        )


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "annrec"


def kafka_classpath(cache_dir: Path) -> str:
    """The broker's jars, resolved with Maven once per Kafka version and then reused."""
    home = cache_dir / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    if (home / ".complete").exists():
        return f"{libs}/*"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise AnnrecError("Maven (mvn) is needed once to fetch Kafka's jars; install maven")
    home.mkdir(parents=True, exist_ok=True)
    group, artifact, version = LOG4J_BINDING.split(":")
    (home / "pom.xml").write_text(
        _POM.format(kafka=KAFKA_VERSION, lg=group, la=artifact, lv=version)
    )
    _say(f"resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} (once)")
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise AnnrecError("mvn could not resolve Kafka: " + " | ".join(tail))
    (home / ".complete").touch()
    return f"{libs}/*"


def redis_server_binary() -> str:
    """redis-server from PATH; installed from Debian's package when missing and we are root."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _say("installing redis-server with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "redis-server"],
        ):
            # apt's and debconf's chatter (the apt-utils note) only when the command fails.
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise AnnrecError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        found = shutil.which("redis-server")
        if found:
            return found
    raise AnnrecError("redis-server not found: install Debian's redis-server package")


class LocalStack:
    def __init__(self, state_dir: Path, cache_dir: Path | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self.cache_dir = cache_dir or default_cache_dir()

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def read_state(self) -> StackInfo | None:
        try:
            doc = json.loads(self.state_path.read_text())
            return StackInfo(
                kafka_bootstrap=doc["kafka_bootstrap"],
                redis_url=doc["redis_url"],
                kafka=Spawned(**doc["kafka"]),
                redis=Spawned(**doc["redis"]),
            )
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            return None

    def running(self) -> StackInfo | None:
        """The recorded stack, if both of its processes are still ours and alive."""
        info = self.read_state()
        if info and info.kafka.alive() and info.redis.alive():
            return info
        return None

    def up(self, timeout_s: float = 90.0) -> StackInfo:
        info = self.running()
        if info is not None:
            return info
        self.down()  # whatever half of an earlier stack is left
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        redis_port, kafka_port, controller_port = _free_ports(3)
        redis_proc = self._start_redis(redis_port)
        # Recorded at once, so `down` can stop redis even if Kafka fails to start.
        self._write_state(
            StackInfo("", f"redis://127.0.0.1:{redis_port}/0", Spawned(0, 0), redis_proc)
        )
        kafka_proc = self._start_kafka(kafka_port, controller_port)
        info = StackInfo(
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            kafka=kafka_proc,
            redis=redis_proc,
        )
        self._write_state(info)
        deadline = time.monotonic() + timeout_s
        try:
            self._wait(lambda: _redis_answers(info.redis_url), redis_proc, "redis", deadline)
            self._wait(lambda: _kafka_answers(info.kafka_bootstrap), kafka_proc, "kafka", deadline)
        except AnnrecError:
            self.down()
            raise
        return info

    def down(self) -> bool:
        """Stop the processes this state directory recorded; True if any was running."""
        info = self.read_state()
        stopped = False
        if info is not None:
            for proc in (info.kafka, info.redis):
                stopped |= _stop(proc)
            self.state_path.unlink(missing_ok=True)
        return stopped

    def _start_redis(self, port: int) -> Spawned:
        data = self.state_dir / "redis"
        data.mkdir(exist_ok=True)
        cmd = [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.state_dir / "logs" / "redis.log"),
        ]
        return self._spawn(cmd, "redis.out")

    def restart_kafka(self, down_s: float = 0.0, timeout_s: float = 90.0) -> StackInfo:
        """Stop the broker, wait down_s, start it again on the same ports and data (chaos)."""
        info = self.running()
        if info is None:
            raise AnnrecError("no local stack running: `annrec stack up` first")
        _stop(info.kafka)
        time.sleep(down_s)
        proc = self._spawn(
            [*self._java(), "kafka.Kafka", str(self.state_dir / "server.properties")], "kafka.out"
        )
        info = replace(info, kafka=proc)
        self._write_state(info)
        self._wait(
            lambda: _kafka_answers(info.kafka_bootstrap),
            proc,
            "kafka",
            time.monotonic() + timeout_s,
        )
        return info

    def pause_redis(self, seconds: float) -> None:
        """Freeze redis-server (SIGSTOP) for `seconds`, then let it go on (SIGCONT): to clients
        an outage (connections hang, then time out), but no data is lost (chaos)."""
        info = self.running()
        if info is None:
            raise AnnrecError("no local stack running: `annrec stack up` first")
        os.kill(info.redis.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(info.redis.pid, signal.SIGCONT)

    def _java(self) -> list[str]:
        log4j = self.state_dir / "log4j2.properties"
        return [
            _java(),
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-UsePerfData",  # no /tmp/hsperfdata_<user> left behind (nothing here reads it)
            f"-Dkafka.logs.dir={self.state_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            kafka_classpath(self.cache_dir),
        ]

    def _start_kafka(self, port: int, controller_port: int) -> Spawned:
        data = self.state_dir / "kafka-data"
        shutil.rmtree(data, ignore_errors=True)  # reformat each time: a fresh, empty cluster
        props = self.state_dir / "server.properties"
        props.write_text(
            _SERVER_PROPERTIES.format(port=port, controller=controller_port, data=data)
        )
        (self.state_dir / "log4j2.properties").write_text(_LOG4J2)
        java = self._java()
        fmt = subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c", str(props)],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise AnnrecError(f"kafka storage format failed: {fmt.stderr.strip()[-500:]}")
        return self._spawn([*java, "kafka.Kafka", str(props)], "kafka.out")

    def _write_state(self, info: StackInfo) -> None:
        self.state_path.write_text(json.dumps(asdict(info), indent=2))

    def _spawn(self, cmd: list[str], out_name: str) -> Spawned:
        with (self.state_dir / "logs" / out_name).open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives `annrec stack up`; stopped by `down`
            )
        stat = _proc_stat(proc.pid)
        if stat is None:
            raise AnnrecError(f"{cmd[0]} exited at once; see {self.state_dir / 'logs' / out_name}")
        return Spawned(proc.pid, int(stat[19]))

    def _wait(self, ready: Callable[[], bool], proc: Spawned, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise AnnrecError(f"{name} exited during start-up; {self._log_tail(name)}")
            if ready():
                return
            time.sleep(0.3)
        raise AnnrecError(f"{name} did not answer in time; {self._log_tail(name)}")

    def _log_tail(self, name: str, lines: int = 8) -> str:
        logs = self.state_dir / "logs"
        files = (
            [logs / "server.log", logs / "kafka.out"]
            if name == "kafka"
            else [logs / "redis.log", logs / "redis.out"]
        )
        for f in files:
            if f.exists() and f.stat().st_size:
                tail = f.read_text(errors="replace").strip().splitlines()[-lines:]
                return f"last lines of {f}:\n" + "\n".join(tail)
        return f"no log in {logs}"


def _stop(proc: Spawned, grace_s: float = 30.0) -> bool:
    if not proc.alive():
        _reap(proc.pid, timeout_s=0)  # it may have died on its own: a zombie of ours, or nothing
        return False
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and proc.alive():
        time.sleep(0.2)
    if proc.alive():
        os.kill(proc.pid, signal.SIGKILL)
    _reap(proc.pid)
    return True


def _reap(pid: int, timeout_s: float = 5.0) -> None:
    """Collect a stopped process's exit status when it is our child (the stack started in this
    process: tests, demo, bench), so no `<defunct>` entry outlives it. A stack started by another
    `annrec stack up` is init's child: nothing to collect here."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [0] state, [19] start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        raise AnnrecError("java (17+) is needed to run the local Kafka broker")
    return java


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _kafka_answers(bootstrap: str) -> bool:
    # An open port is not enough: the broker must be registered and unfenced.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=2).brokers)
    except Exception:
        return False


def _say(message: str) -> None:
    print(f"annrec: {message}", file=sys.stderr, flush=True)
