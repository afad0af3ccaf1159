"""Render the shipped Asterisk configuration for one instance and run Asterisk with it.

The files in ``asterisk/`` are templates with ``{{NAME}}`` placeholders. The same renderer
serves production (``ari-app render-config``), the dev stack (``make up``) and the tests, which
start instances on free loopback ports so that two runs never collide.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ari_app.config import Config
from ari_app.runtime import Runtime

log = logging.getLogger(__name__)

CONFIG_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "asterisk"
CONFIG_FILES = (
    "asterisk.conf",
    "modules.conf",
    "pjsip.conf",
    "extensions.conf",
    "queues.conf",
    "http.conf",
    "ari.conf",
    "logger.conf",
    "rtp.conf",
    "musiconhold.conf",
    "cdr.conf",
    "cel.conf",
    "features.conf",
    "indications.conf",
    "acl.conf",
    "udptl.conf",
    "ccss.conf",
    "pjproject.conf",
    "websocket_client.conf",
    "queuerules.conf",
)
BOOT_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 15
DEV_CERT_DAYS = 825

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


class StackError(RuntimeError):
    """Asterisk did not come up or go down as asked; the message points at the log."""


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill {{NAME}} placeholders; an unknown placeholder is an error, never left blank."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise StackError(f"config template needs a value for {{{{{name}}}}}")
        return str(values[name])

    return _PLACEHOLDER.sub(fill, template)


def template_values(config: Config, dirs: Mapping[str, str], module_dir: str) -> dict[str, object]:
    sip, bridge = config.sip, config.bridge
    ari_host, ari_port = _host_port(config.ari_url)
    ari_tls = config.ari_url.lower().startswith("https:")
    default = config.profiles["default"]
    return {
        **dirs,
        "MODULE_DIR": module_dir,
        "DATA_DIR": "/usr/share/asterisk",
        "MAX_CALLS": bridge["max_calls"],
        "SIP_HOST": sip["host"],
        "SIP_PORT": sip["port"],
        "SIP_TLS_PORT": sip["tls_port"],
        "TLS_CERT_FILE": dirs["TLS_CERT_FILE"],
        "TLS_KEY_FILE": dirs["TLS_KEY_FILE"],
        "TLS_CA_FILE": dirs.get("TLS_CA_FILE", ""),
        "TLS_VERIFY_SERVER": _yes_no(bool(sip.get("tls_verify_server", False))),
        "CARRIER_MATCH": sip["carrier_match"],
        "SIGNALLING_PERMIT": signalling_permit(
            sip["carrier_match"], sip["bot_match"], sip["agent_match"]
        ),
        "CARRIER_MEDIA_ENCRYPTION": sip["carrier_media_encryption"],
        "CARRIER_MEDIA_ENCRYPTION_OPTIMISTIC": _yes_no(sip["carrier_media_encryption_optimistic"]),
        "BOT_MEDIA_ENCRYPTION": sip["bot_media_encryption"],
        "BOT_MEDIA_ENCRYPTION_OPTIMISTIC": _yes_no(sip["bot_media_encryption_optimistic"]),
        "BOT_CONTACT": default.bot_uri or f"sip:{default.bot_endpoint}@127.0.0.1",
        "AGENT_CONTACT": sip["agent_contact"],
        "ARI_HOST": ari_host,
        "ARI_PORT": ari_port,
        # an https:// ARI url: TLS listener only, the plain HTTP server is not started
        "ARI_HTTP_ENABLED": _yes_no(not ari_tls),
        "ARI_TLS_ENABLED": _yes_no(ari_tls),
        "ARI_TLS_CERT_FILE": dirs.get("ARI_TLS_CERT_FILE", dirs["TLS_CERT_FILE"]),
        "ARI_TLS_KEY_FILE": dirs.get("ARI_TLS_KEY_FILE", dirs["TLS_KEY_FILE"]),
        "ARI_USER": config.ari["username"],
        "ARI_PASSWORD": config.ari_password,
        "ARI_APP": config.app_name,
        # RTP bound to the SIP address (docs/asterisk-tuning.md): with a wildcard bind Asterisk
        # resolves its host name and A.ROOT-SERVERS.NET for every RTP session it creates
        "MEDIA_ADDRESS": rtp_bind_address(sip["host"]),
        "BIND_RTP_TO_MEDIA_ADDRESS": _yes_no(bool(rtp_bind_address(sip["host"]))),
        "RTP_START": sip["rtp_start"],
        "RTP_END": sip["rtp_end"],
        "TRANSFER_HOLD_SECONDS": bridge["transfer_hold_seconds"],
        "QUEUE_TIMEOUT_SECONDS": bridge["queue_timeout_seconds"],
        "AGENT_RING_IN_USE": _yes_no(bool(bridge["agent_ring_in_use"])),
        # the dialplan hands the business_hours value to the app as a Stasis() argument
        "AVAILABILITY_ARG": "${" + bridge["availability_variable"] + "}",
    }


@dataclass
class AsteriskInstance:
    """One Asterisk process with its own directory tree under the runtime's scratch area."""

    runtime: Runtime
    config: Config
    root: Path  # host path of the instance directory

    def __post_init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._console_log = self.root / "log" / "console.log"

    @property
    def conf_path(self) -> str:
        return self.runtime.runtime_path(self.root / "etc" / "asterisk.conf")

    @property
    def messages_log(self) -> Path:
        return self.root / "log" / "messages.log"

    def render_config(self) -> None:
        if not self.config.ari_password:
            raise StackError("no ARI password: set BOTBRIDGE_ARI_PASSWORD or run `make setup`")
        dirs: dict[str, str] = {}
        for key, sub in (
            ("ETC_DIR", "etc"),
            ("VARLIB_DIR", "lib"),
            ("SPOOL_DIR", "spool"),
            ("RUN_DIR", "run"),
            ("LOG_DIR", "log"),
            ("TLS_DIR", "tls"),
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            dirs[key] = self.runtime.runtime_path(self.root / sub)
        cert, private_key = self._tls_files()
        dirs["TLS_CERT_FILE"] = self.runtime.runtime_path(cert)
        dirs["TLS_KEY_FILE"] = self.runtime.runtime_path(private_key)
        if self.config.sip.get("tls_ca_file"):
            ca_file = self.config.state_path(self.config.sip["tls_ca_file"])
            if not ca_file.is_file():
                raise StackError(f"sip.tls_ca_file {ca_file} is missing")
            shutil.copy(ca_file, self.root / "tls" / "peer-ca.crt")
            dirs["TLS_CA_FILE"] = self.runtime.runtime_path(self.root / "tls" / "peer-ca.crt")
        ari_cert, ari_key = self._ari_tls_files((cert, private_key))
        dirs["ARI_TLS_CERT_FILE"] = self.runtime.runtime_path(ari_cert)
        dirs["ARI_TLS_KEY_FILE"] = self.runtime.runtime_path(ari_key)
        values = template_values(self.config, dirs, self.runtime.module_dir())
        for name in CONFIG_FILES:
            text = render((CONFIG_TEMPLATE_DIR / name).read_text(), values)
            target = self.root / "etc" / name
            target.write_text(text)
            if name == "ari.conf":
                target.chmod(0o600)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, *, detach: bool = False) -> None:
        self.render_config()
        log_fh = self._console_log.open("ab")
        argv = self.runtime.command(["asterisk", "-C", self.conf_path, "-f", "-n", "-g"])
        log.info("starting Asterisk: %s", " ".join(argv))
        self._proc = subprocess.Popen(
            argv,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,  # `make up`: Asterisk outlives the command
        )
        self.wait_booted()

    def wait_booted(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise StackError(
                    f"Asterisk exited with code {self._proc.returncode} while booting; "
                    f"see {self._console_log}"
                )
            out = self.cli("core waitfullybooted", timeout=BOOT_TIMEOUT_SECONDS, check=False)
            if out.returncode == 0 and "fully booted" in out.stdout.lower():
                return
            time.sleep(0.2)
        raise StackError(
            f"Asterisk not fully booted after {BOOT_TIMEOUT_SECONDS}s; see {self._console_log}"
        )

    def cli(
        self, command: str, *, timeout: float = 10, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = self.runtime.command(["asterisk", "-C", self.conf_path, "-rx", command])
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise StackError(f"asterisk -rx {command!r} failed: {result.stderr.strip()}")
        return result

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self.cli("core stop now", check=False)
            return
        self.cli("core stop now", check=False)
        try:
            self._proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("Asterisk did not stop in %ss; killing it", STOP_TIMEOUT_SECONDS)
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _tls_files(self) -> tuple[Path, Path]:
        """Configured certificate files, or a self-signed development pair for this instance."""
        cert = self.config.state_path(self.config.sip["tls_cert_file"])
        key = self.config.state_path(self.config.sip["tls_key_file"])
        if cert.exists() and key.exists():
            # copy them where the runtime can read them (a chroot sees only its own tree)
            shutil.copy(cert, self.root / "tls" / "server.crt")
            shutil.copy(key, self.root / "tls" / "server.key")
        else:
            make_self_signed(self.root / "tls" / "server.crt", self.root / "tls" / "server.key")
        return self.root / "tls" / "server.crt", self.root / "tls" / "server.key"

    def _ari_tls_files(self, sip_pair: tuple[Path, Path]) -> tuple[Path, Path]:
        """The pair for HTTPS ARI: ari.tls_cert_file/tls_key_file, else the SIP TLS pair."""
        if not self.config.ari.get("tls_cert_file"):
            return sip_pair
        cert = self.config.state_path(self.config.ari["tls_cert_file"])
        key = self.config.state_path(self.config.ari.get("tls_key_file") or "")
        if not (cert.is_file() and key.is_file()):
            raise StackError(
                f"ari.tls_cert_file {cert} or ari.tls_key_file {key} is missing "
                "(`make certs` makes a development pair under var/tls)"
            )
        shutil.copy(cert, self.root / "tls" / "ari.crt")
        shutil.copy(key, self.root / "tls" / "ari.key")
        return self.root / "tls" / "ari.crt", self.root / "tls" / "ari.key"


def make_self_signed(cert: Path, key: Path, common_name: str = "127.0.0.1") -> None:
    if cert.exists() and key.exists():
        return
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            str(DEV_CERT_DAYS),
            "-subj",
            f"/CN={common_name}",
            "-addext",
            f"subjectAltName=IP:{common_name}",
        ],
        check=True,
        capture_output=True,
    )


def free_port(host: str = "127.0.0.1", *, udp_too: bool = False) -> int:
    """A port free on host for TCP (and UDP when asked)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise StackError("no free port found on " + host)


def _host_port(url: str) -> tuple[str, int]:
    match = re.match(r"^https?://([^/:]+):(\d+)", url)
    if not match:
        raise StackError(f"ARI url {url!r} must be http(s)://host:port/ari")
    return match.group(1), int(match.group(2))


def signalling_permit(*lists: str) -> str:
    """Union of allow-lists as an ACL permit value: addresses/CIDRs, ports dropped."""
    permit: list[str] = []
    for item in ",".join(lists).split(","):
        address = item.strip()
        if address.count(":") == 1:  # IPv4 address:port (identify match pins a port)
            address = address.split(":", 1)[0]
        if address and address not in permit:
            permit.append(address)
    return ",".join(permit)


def rtp_bind_address(host: object) -> str:
    """The address RTP binds to and the SDP announces: sip.host when it names one address.

    Empty for a wildcard (0.0.0.0, ::) or a name: Asterisk then binds RTP to every address
    and, per RTP session, looks up its own host name and A.ROOT-SERVERS.NET to pick the
    RTCP address (res_rtp_asterisk, ast_find_ourip), a DNS query on the SIP thread.
    """
    try:
        address = ipaddress.ip_address(str(host).strip().strip("[]"))
    except ValueError:
        return ""
    return "" if address.is_unspecified else str(address)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
