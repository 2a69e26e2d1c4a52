"""hub.toml: typed loading, and `hub check` naming the file, the key and the fault."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hub.config import load_config
from hub.errors import ConfigError
from hub.keys import issue, new_key, write_certificate
from hub.runtime import check

from .support import REPO, write_config


def shipped_copy(tmp_path: Path) -> Path:
    """The shipped hub.toml in a folder of its own (keys and store stay out of the clone)."""
    for name in ("xsd", "mappings", "examples"):
        os.symlink(REPO / name, tmp_path / name)
    (tmp_path / "hub.toml").write_text((REPO / "hub.toml").read_text())
    return tmp_path / "hub.toml"


def test_shipped_config_is_a_working_topology(tmp_path: Path) -> None:
    config = load_config(REPO / "hub.toml")
    assert config.hub.party_id == "VN-NSW" and {"VN-MOIT", "VN-CUSTOMS", "TH-ASW"} <= set(config.agencies)
    path = shipped_copy(tmp_path)
    out = subprocess.run([sys.executable, "-m", "hub.cli", "keys", "init", "--config", str(path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "0600" in out.stdout
    assert (tmp_path / "keys" / "hub.key").stat().st_mode & 0o777 == 0o600
    errors, _ = check(path)
    assert errors == []
    out = subprocess.run([sys.executable, "-m", "hub.cli", "check", "--config", str(path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "OK" in out.stdout


def edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_typo_is_refused_with_did_you_mean(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), "max_depth = 40", "max_dept = 40")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "hub.max_dept" and "did you mean 'max_depth'" in info.value.reason
    assert info.value.file == str(path)


def test_a_required_key_given_under_a_misspelt_name_is_named(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), 'party_id = "VN-NSW"', 'partyid = "VN-NSW"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.key, info.value.reason) == ("hub.party_id", "is required; 'partyid' is given: did you mean 'party_id'?")


def test_route_to_unknown_agency(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), '{ agency = "TH-ASW"', '{ agency = "TH-ASV"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "routes[0].deliver[0].agency" in info.value.key and "did you mean 'TH-ASW'" in info.value.reason


@pytest.mark.parametrize(
    "old, new, key, said",
    [
        ('from = "VN-MOIT"', 'from = "VN-MOTI"', "routes[0].from", "unknown agency 'VN-MOTI'; did you mean 'VN-MOIT'?"),
        ('to = "TH-ASW"', 'to = "TH-ASWX"', "routes[0].to", "'TH-ASWX' is neither an agency nor this hub ('VN-NSW'); did you mean 'TH-ASW'?"),
    ],
)
def test_a_route_between_unknown_parties_is_a_typo_not_a_route_that_never_matches(
    tmp_path: Path, old: str, new: str, key: str, said: str
) -> None:
    path = edit(write_config(tmp_path), old, new)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.key, info.value.reason) == (str(path), key, said)
    load_config(edit(path, new, 'to = "VN-NSW"' if "to" in key else 'from = "*"'))  # the hub itself, or any sender


def test_an_unsupported_store_is_named_in_the_file_checked(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), f'store = "sqlite:///{tmp_path}/hub.db"', 'store = "mysql://db1/hub"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.key) == (str(path), "hub.store") and "unsupported store URL 'mysql://db1/hub'" in info.value.reason


def test_unknown_adapter_alias(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), 'adapter = "http"', 'adapter = "htp"')
    errors, _ = check(path)
    assert len(errors) == 1 and "agencies[TH-ASW].adapter" in errors[0] and "did you mean 'http'" in errors[0]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ("options = { timout = 5 }", "agencies[TH-ASW].options.timout: unknown option of the http adapter; did you mean 'timeout'?"),
        ('options = { inbx = "in" }', "unknown option of the http adapter; its options are ca, client_cert, client_key, timeout"),
        ('options = { events = ["delivered"] }', "the 'http' adapter cannot carry status events"),
    ],
)
def test_a_misspelt_agency_option_is_an_error_not_ignored(tmp_path: Path, options: str, said: str) -> None:
    """A ministry's inbox or a gateway's timeout that is silently not applied is found in production."""
    path = edit(write_config(tmp_path), 'adapter = "http"', 'adapter = "http"\n' + options)
    errors, _ = check(path)
    assert len(errors) == 1 and said in errors[0]


@pytest.mark.parametrize("timeout", ['"x"', "[]", "nan", "-1", "true"])
def test_an_adapter_timeout_that_is_no_number_of_seconds_is_a_fault_not_a_traceback(tmp_path: Path, timeout: str) -> None:
    """`hub check` names it (float() raised ValueError or TypeError out of `hub check`, and a NaN
    or negative deadline was taken)."""
    path = edit(write_config(tmp_path), 'adapter = "http"', f'adapter = "http"\noptions = {{ timeout = {timeout} }}')
    errors, _ = check(path)
    assert len(errors) == 1 and "agencies[TH-ASW].options.timeout: must be a positive number of seconds, not " in errors[0]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ('poll_interval = "x"', 'options.poll_interval: must be a positive number of seconds, not \'x\''),
        ("poll_interval = nan", "options.poll_interval: must be a positive number of seconds, not nan"),
        ("inbox = []", "options.inbox: must be the path of a folder, not []"),
        ("inbox = 5", "options.inbox: must be the path of a folder, not 5"),
    ],
)
def test_a_folder_inbox_with_options_that_cannot_work_is_a_fault_in_hub_check(tmp_path: Path, options: str, said: str) -> None:
    """`hub check` names them (a bad poll_interval used to pass it and stop `hub serve` at start
    with a traceback; `inbox = []` meant no inbox, `inbox = 5` a folder named "5")."""
    path = edit(write_config(tmp_path), 'endpoint = "{folder}/moit-outbox"'.format(folder=tmp_path),
                f'endpoint = "{tmp_path}/moit-outbox"\noptions = {{ {options} }}')
    errors, _ = check(path)
    assert errors == [f"{path}: agencies[VN-MOIT].{said}"]


@pytest.mark.parametrize(
    ("old", "new", "key", "said"),
    [
        ('adapter = "http"', 'adapter = "http"\noptions = "fast"', "agencies[TH-ASW].options", "must be a table"),
        ('adapter = "http"', 'adapter = "http"\nnmae = "Thai gateway"', "agencies[TH-ASW].nmae", "did you mean 'name'?"),
        ('id = "TH-ASW"', 'id = "VN-MOIT"', "agencies[VN-MOIT].id", "used twice (agencies[0] and agencies[2]"),
        ('id = "TH-ASW"', 'id = ""', "agencies[2].id", "must not be empty"),
        # the envelope could never carry it: refused here, not found when the first message fails
        ('id = "VN-MARD"', 'id = "VN MARD\\u0001"', "agencies[1].id",
         r"'VN MARD\x01' cannot stand in an envelope: an identity must match [A-Za-z0-9][A-Za-z0-9._\-]{0,63}"),
    ],
)
def test_agency_faults_name_the_agency_by_its_id(tmp_path: Path, old: str, new: str, key: str, said: str) -> None:
    """An operator looks for ``id = "TH-ASW"`` in hub.toml, not for the third [[agencies]] table:
    every other fault names the agency by its id, so these do too; the index only when the id
    itself is what is wrong (and, for an id used twice, to tell the two tables apart)."""
    path = edit(write_config(tmp_path), old, new)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key and said in info.value.reason, info.value


def test_the_hubs_party_id_must_fit_an_envelope_too(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), 'party_id = "VN-NSW"', 'party_id = "VN/NSW"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "hub.party_id" and "'VN/NSW' cannot stand in an envelope" in info.value.reason


def test_the_identity_pattern_is_the_envelope_schemas() -> None:
    from lxml import etree

    from hub.config import IDENTITY

    schema = etree.parse(str(REPO / "xsd" / "envelope" / "envelope.xsd"))
    (pattern,) = schema.xpath("//xs:simpleType[@name='Identity']//xs:pattern/@value", namespaces={"xs": "http://www.w3.org/2001/XMLSchema"})
    assert IDENTITY == pattern


def test_a_config_that_is_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    # "Bộ Nông nghiệp" saved by an editor in a legacy code page: one byte that is not UTF-8
    data = path.read_bytes().replace(b'name = "Ministry of Agriculture"', b'name = "B\xd9 N\xf4ng nghi\xd2p"')
    path.write_bytes(data)
    offset = data.index(b"\xd9")
    line = data.count(b"\n", 0, offset) + 1
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path) and f"not UTF-8: byte 0xd9 at offset {offset} (line {line})" in info.value.reason
    out = subprocess.run([sys.executable, "-m", "hub.cli", "check", "--config", str(path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and "Traceback" not in out.stderr and f"(line {line})" in out.stderr, out.stderr


def test_missing_schema_file_names_the_file(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), "xsd/formd/formd.xsd", "xsd/formd/missing.xsd")
    errors, _ = check(path)
    assert len(errors) == 1 and "missing.xsd" in errors[0] and "schemas.formd" in errors[0]


def test_broken_stylesheet(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xsl"
    bad.write_text('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"><xsl:template match="/"><xsl:value-of select="((("/></xsl:template></xsl:stylesheet>')
    path = write_config(tmp_path / "c")
    text = path.read_text()
    path.write_text(text.replace(f"{REPO}/mappings/co-to-formd.xsl", str(bad)))
    errors, _ = check(path)
    assert len(errors) == 1 and "bad.xsl" in errors[0] and "does not compile" in errors[0]


def test_expired_certificate_is_a_fault(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    key = new_key("ec")
    old = issue(key, "old", not_before=datetime.now(timezone.utc) - timedelta(days=400), days=30)
    write_certificate(tmp_path / "keys" / "VN-MARD.crt", old)
    errors, _ = check(path)
    assert len(errors) == 1 and "VN-MARD.crt" in errors[0] and "not valid now" in errors[0]


def test_wrong_type(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), "concurrency = 4", 'concurrency = "four"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "dispatcher.concurrency" and "must be int" in info.value.reason


def test_check_exit_status_and_message(tmp_path: Path) -> None:
    path = edit(write_config(tmp_path), 'schema = "co"', 'schema = "cox"')
    out = subprocess.run([sys.executable, "-m", "hub.cli", "check", "--config", str(path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0 and str(path) in out.stderr and "routes[0].schema" in out.stderr


def test_every_independent_fault_is_reported_at_once(tmp_path: Path) -> None:
    """Faults in [hub], [dispatcher] and a route: one run of `hub check` (or `hub serve`) names all three."""
    path = edit(write_config(tmp_path), "max_depth = 40", "max_dept = 40")
    edit(path, "concurrency = 4", 'concurrency = "four"')
    edit(path, 'schema = "co"', 'schema = "cox"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [f.key for f in info.value.faults] == ["hub.max_dept", "dispatcher.concurrency", "routes[0].schema"]
    assert (info.value.file, info.value.key) == (str(path), "hub.max_dept")  # the first, as a single fault's
    assert str(info.value).splitlines() == [str(f) for f in info.value.faults]
    out = subprocess.run([sys.executable, "-m", "hub.cli", "check", "--config", str(path)], capture_output=True, text=True, cwd=REPO)
    lines = out.stderr.splitlines()
    assert out.returncode == 1 and len(lines) == 4 and lines[3] == f"3 problem(s) in {path}", out.stderr
    assert lines[0] == f"{path}: hub.max_dept: unknown key; did you mean 'max_depth'?"
    assert lines[1] == f"{path}: dispatcher.concurrency: must be int, not 'four'"
    assert lines[2] == f"{path}: routes[0].schema: names no schema in [schemas]: 'cox'"
    out = subprocess.run([sys.executable, "-m", "hub.cli", "serve", "--config", str(path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2 and out.stderr.splitlines() == [f"configuration error: {line}" for line in lines[:3]]


def test_a_fault_that_others_depend_on_is_reported_alone(tmp_path: Path) -> None:
    """A missing agency id and an unusable party_id: the routes that name that agency and the hub
    are not faulted as well (the agency meant may be the one without an id), nor is the misspelt
    key named twice (required, then unknown)."""
    path = edit(write_config(tmp_path, extra='[[routes]]\nname = "to-the-hub"\nfrom = "VN-MOIT"\nto = "VN-NSW"\n'
                                              'deliver = [{ agency = "VN-CUSTOMS" }]\n'),
                'id = "VN-MOIT"', 'idd = "VN-MOIT"')
    edit(path, 'party_id = "VN-NSW"', 'party_id = "VN NSW"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(f.key, f.reason) for f in info.value.faults] == [
        ("hub.party_id", "'VN NSW' cannot stand in an envelope: an identity must match [A-Za-z0-9][A-Za-z0-9._\\-]{0,63} "
                         "(Identity in xsd/envelope/envelope.xsd)"),
        ("agencies[0].id", "is required; 'idd' is given: did you mean 'id'?"),
    ]
    # with every agency named, a route's unknown agency is a fault of its own again
    edit(path, 'idd = "VN-MOIT"', 'id = "VN-MOIT"')
    edit(path, 'from = "VN-MOIT"\nto = "VN-NSW"', 'from = "VN-MOTI"\nto = "VN-NSW"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [f.key for f in info.value.faults] == ["hub.party_id", "routes[1].from"]


def test_an_agency_whose_id_is_unusable_leaves_the_routes_naming_it_unfaulted(tmp_path: Path) -> None:
    """An id that cannot stand in an envelope is that agency's fault alone: the routes that name
    the id meant are not faulted as well (as for a missing id)."""
    path = edit(write_config(tmp_path), 'id = "VN-MOIT"', 'id = "VN MOIT"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [f.key for f in info.value.faults] == ["agencies[0].id"]


@pytest.mark.parametrize("old, new, key", [
    ("lease_seconds = 5.0", "lease_seconds = nan", "dispatcher.lease_seconds"),
    ("delivery_timeout = 3", "delivery_timeout = inf", "dispatcher.delivery_timeout"),
    ("jitter = 0.1", "jitter = nan", "retry.jitter"),
    ("max_depth = 40", "max_depth = 40\nbody_timeout = inf", "hub.body_timeout"),
    ("max_depth = 40", "max_depth = 40\nhead_timeout = nan", "hub.head_timeout"),
    ("jitter = 0.1", "jitter = 0.1\n[trust]\ncrl_grace_seconds = inf", "trust.crl_grace_seconds"),
])
def test_a_number_of_seconds_or_a_ratio_must_be_finite(tmp_path: Path, old: str, new: str, key: str) -> None:
    """TOML has nan and inf: neither is a time or a fraction (a NaN lease never ends; an infinite
    CRL grace period crashed `hub check`)."""
    path = edit(write_config(tmp_path), old, new)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [f.key for f in info.value.faults] == [key] and info.value.reason.startswith("must be a finite number, not ")
    errors, _ = check(path)
    assert len(errors) == 1 and f"{key}: must be a finite number, not " in errors[0]


def test_head_timeout_is_10_s_at_most_body_timeout_and_more_than_0(tmp_path: Path) -> None:
    """A request head's deadline: 10 s by default, body_timeout where that is shorter (a head had
    body_timeout before), and given, more than 0 and no more than body_timeout."""
    path = write_config(tmp_path)
    assert load_config(path).hub.head_timeout == 10.0
    edit(path, "max_depth = 40", "max_depth = 40\nbody_timeout = 2.5")
    assert load_config(path).hub.head_timeout == 2.5
    edit(path, "body_timeout = 2.5", "body_timeout = 30\nhead_timeout = 4")
    assert load_config(path).hub.head_timeout == 4.0
    for given, said in (("head_timeout = 31", "must not be more than body_timeout (30 s)"), ("head_timeout = 0", "must be more than 0"),
                        ("head_timeout = -1", "must not be negative")):
        edit(path, "head_timeout = 4", given)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert [f.key for f in info.value.faults] == ["hub.head_timeout"] and info.value.reason.startswith(said), info.value.reason
        errors, _ = check(path)
        assert len(errors) == 1 and f"hub.head_timeout: {said}" in errors[0], errors
        edit(path, given, "head_timeout = 4")


@pytest.mark.parametrize("options", ["[]", '""', "false", "0"])
def test_agency_options_that_are_not_a_table_are_refused_even_when_empty(tmp_path: Path, options: str) -> None:
    path = edit(write_config(tmp_path), 'endpoint = "http://127.0.0.1:9/inbox"', f'endpoint = "http://127.0.0.1:9/inbox"\noptions = {options}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.key, info.value.reason) == ("agencies[TH-ASW].options", "must be a table")


def test_metrics_from_is_loopback_by_default_and_takes_addresses_and_networks(tmp_path: Path) -> None:
    import ipaddress

    path = write_config(tmp_path)
    assert [str(n) for n in load_config(path).hub.metrics_from] == ["127.0.0.1/32", "::1/128"]
    edit(path, "max_depth = 40", 'max_depth = 40\nmetrics_from = ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]')
    assert load_config(path).hub.metrics_from == tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "192.168.1.7/32", "fd00::/8"))
    edit(path, 'metrics_from = ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]', "metrics_from = []")
    assert load_config(path).hub.metrics_from == ()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('["10.0.0.1/8"]', "'10.0.0.1/8' has host bits set; did you mean '10.0.0.0/8'?"),
        ('["localhost"]', "did you mean '127.0.0.1/32' and '::1/128'?"),
        ('["127.0.0.1:9090"]', "'127.0.0.1:9090' is not an IP address or CIDR network; did you mean '127.0.0.1/32'?"),
        ('["*"]', "did you mean '0.0.0.0/0' and '::/0'?"),
        ('["prometheus.internal"]', "'prometheus.internal' is not an IP address or CIDR network (e.g. '10.0.0.5' or '10.0.0.0/8')"),
        ("[10]", "must be a list of strings"),
    ],
)
def test_a_bad_metrics_from_entry_is_a_config_error(tmp_path: Path, value: str, says: str) -> None:
    path = edit(write_config(tmp_path), "max_depth = 40", f"max_depth = 40\nmetrics_from = {value}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "hub.metrics_from" and says in info.value.reason, info.value.reason


def test_pipeline_threads_defaults_to_two_and_must_be_at_least_one(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path / "default")).hub.pipeline_threads == 2
    path = edit(write_config(tmp_path / "zero"), "max_depth = 40", "max_depth = 40\npipeline_threads = 0")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "hub.pipeline_threads", info.value


def test_route_names_are_unique_and_not_the_hubs_own(tmp_path: Path) -> None:
    """Outbox rows name their route and a retry takes that route's policy: two routes of one name
    would silently share the second one's retries."""
    second = '[[routes]]\nname = "mard-to-customs"\nfrom = "VN-MARD"\ndeliver = [{ agency = "VN-CUSTOMS" }]\n'
    path = edit(write_config(tmp_path, extra=second), 'name = "mard-to-customs"', 'name = "formd-to-thailand"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "routes[1].name" and "used twice" in info.value.reason
    edit(path, 'name = "formd-to-thailand"\nfrom = "VN-MARD"', 'name = "@events"\nfrom = "VN-MARD"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "status events" in info.value.reason


def test_adapter_settings_errors_name_the_file_checked(tmp_path: Path) -> None:
    """An adapter's own settings are read when the adapters are made; ``hub check`` reports their
    faults as errors of the file it was given, whatever its name."""
    path = write_config(tmp_path)
    prod = tmp_path / "prod.toml"
    prod.write_text(path.read_text().replace('endpoint = "http://127.0.0.1:', 'endpoint = "http://127.0.0.1:x', 1))
    errors, _ = check(prod)
    assert len(errors) == 1 and errors[0].startswith(str(prod)) and "agencies[" in errors[0], errors
    out = subprocess.run([sys.executable, "-m", "hub.cli", "check", "--config", str(prod)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0 and str(prod) in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_read_from_is_loopback_by_default_and_parsed_and_checked_as_metrics_from(tmp_path: Path) -> None:
    import ipaddress

    path = write_config(tmp_path)
    assert [str(n) for n in load_config(path).hub.read_from] == ["127.0.0.1/32", "::1/128"]
    edit(path, "max_depth = 40", 'max_depth = 40\nread_from = ["10.0.0.0/8", "192.168.1.7"]')
    hub = load_config(path).hub
    assert hub.read_from == tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "192.168.1.7/32"))
    assert [str(n) for n in hub.metrics_from] == ["127.0.0.1/32", "::1/128"]  # each its own
    edit(path, 'read_from = ["10.0.0.0/8", "192.168.1.7"]', 'read_from = ["10.0.0.1/8"]')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "hub.read_from" and "has host bits set; did you mean '10.0.0.0/8'?" in info.value.reason


def test_a_route_naming_one_agency_twice_is_refused(tmp_path: Path) -> None:
    """Two destinations of one agency would be two rows under one (sender, message id): an HTTP
    partner drops the second as a duplicate, the file adapter refuses to overwrite the first."""
    path = edit(write_config(tmp_path), '{ agency = "TH-ASW"', '{ agency = "TH-ASW" }, { agency = "TH-ASW"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "routes[0].deliver[1].agency" and "named twice in this route" in info.value.reason


def test_an_ipv6_listen_address_is_written_in_brackets(tmp_path: Path) -> None:
    """As a URL writes it: the log's "listening on http://[::1]:8480", the demo's URLs."""
    path = write_config(tmp_path)
    text = path.read_text()
    listen = next(line for line in text.splitlines() if line.startswith("listen = "))
    path.write_text(text.replace(listen, 'listen = "[::1]:8480"'))
    hub = load_config(path).hub
    assert (hub.listen_host, hub.listen_port, hub.listen_address) == ("::1", 8480, "[::1]:8480")
