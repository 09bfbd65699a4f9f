"""The topology loader: shipped topologies load, and every kind of bad input gets a message that
names the file, the dotted path and what to fix."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmd_conformance.topology import REPO, TopologyError, known_topologies, load_topology, parse_topology

PATTERN2 = REPO / "manifests" / "topologies" / "pattern2.yaml"
SHOWN = "manifests/topologies/x.yaml"


def base() -> dict:
    return yaml.safe_load(PATTERN2.read_text())


def problems_of(data: dict | str) -> list[str]:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(TopologyError) as excinfo:
        parse_topology(text, REPO / SHOWN)
    return str(excinfo.value).splitlines()


def only_problem(data: dict | str) -> str:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize("name", ["pattern1", "pattern2", "pattern2-single-pool", "pattern2-gke-local", "pattern2-llmd",
                                  "pattern2-llmd-single-pool", "pattern2-rewrite"])
def test_shipped_topologies_load(name):
    """Every topology under manifests/topologies loads without problems."""
    topology = load_topology(name)
    assert topology.name == name
    assert topology.models and topology.pools and topology.routes


def test_known_topologies_lists_the_shipped_files():
    """known_topologies() names the files under manifests/topologies."""
    assert {"pattern1", "pattern2", "pattern2-single-pool"} <= set(known_topologies())


def test_pattern2_is_read_into_the_model():
    """pattern2 becomes the dataclasses the checks read (ports, selectors, rules, expectations)."""
    t = load_topology("pattern2")
    assert t.gateway_name == "infra-pattern2-inference-gateway" and t.listener_port == 80
    assert t.bbr_header == "X-Gateway-Base-Model-Name"
    assert [(r.model, r.pool) for r in t.routes[0].rules] == [
        ("google/gemma-2b-it", "gaie-gemma"), ("microsoft/Phi-3-mini-4k-instruct", "gaie-phi")]
    assert t.pool("gaie-gemma").target_ports == (8000,) and t.pool("gaie-gemma").epp_port == 9002
    assert t.models_of_pool("gaie-phi") == (t.model("microsoft/Phi-3-mini-4k-instruct"),)
    assert t.model_selector("google/gemma-2b-it") == {"llm-d.ai/inferenceServing": "true",
                                                      "llm-d.ai/model": "gemma-2b-it"}
    assert t.distinct_gpu_nodes_per_model and t.gpu_nodes == 2
    assert t.routing.requests == 300 and t.routing.accuracy_lower_bound == 0.98
    assert not t.has_catch_all_rule
    assert load_topology("pattern2-single-pool").has_catch_all_rule


def test_lookup_of_an_unknown_model_or_pool_names_the_known_ones():
    """Topology.model/pool raise KeyError listing what exists."""
    t = load_topology("pattern2")
    with pytest.raises(KeyError, match="pools: gaie-gemma, gaie-phi"):
        t.pool("gaie-x")
    with pytest.raises(KeyError, match="models: google/gemma-2b-it, microsoft/Phi-3-mini-4k-instruct"):
        t.model("nope")


def test_unknown_topology_name_lists_the_known_ones():
    """An unknown name says which names exist."""
    with pytest.raises(TopologyError) as excinfo:
        load_topology("pattern3")
    assert str(excinfo.value) == ("unknown topology 'pattern3' (known: pattern1, pattern2, pattern2-16-models, "
                                  "pattern2-4-models, pattern2-8-models, pattern2-gke-local, pattern2-llmd, "
                                  "pattern2-llmd-single-pool, pattern2-rewrite, pattern2-single-pool); "
                                  "pass one of these names or the path of a topology YAML file")


def test_missing_topology_file_is_named(tmp_path: Path):
    """A path that does not exist is reported as such."""
    with pytest.raises(TopologyError, match=r"topology file .*/nope.yaml does not exist"):
        load_topology(tmp_path / "nope.yaml")


def test_topology_loads_from_a_path_outside_the_repository(tmp_path: Path):
    """A path loads; messages then show the path as given."""
    path = tmp_path / "mine.yaml"
    path.write_text(PATTERN2.read_text())
    assert load_topology(str(path)).source == path
    path.write_text("name: [")
    with pytest.raises(TopologyError, match=rf"^{path}: "):
        load_topology(path)


def test_bad_yaml_reports_the_line():
    """A YAML syntax error names the line and column."""
    assert only_problem("name: x\nnamespace: y\n  bad: indent\n").startswith(
        f"{SHOWN}: line 3, column 6: invalid YAML: mapping values are not allowed here")


def test_duplicate_yaml_key_is_refused():
    """A key given twice in one mapping is an error (PyYAML would keep the last silently)."""
    assert only_problem("name: a\nname: b\n") == (
        f"{SHOWN}: line 2, column 1: invalid YAML: duplicate key 'name' (first at line 1); keep only one")


def test_top_level_must_be_a_mapping():
    """A list or scalar document is refused."""
    assert only_problem("- a\n") == f"{SHOWN}: top level: expected a mapping, found a list"


def test_missing_required_field_names_its_dotted_path():
    """A missing field is reported with its path and expected kind."""
    data = base()
    del data["models"][1]["pool"]
    assert only_problem(data) == f"{SHOWN}: models[1].pool: required field is missing (add it as a non-empty string)"


def test_unknown_key_lists_the_allowed_keys():
    """A misspelt key is reported with the keys allowed at that place."""
    data = base()
    data["pools"][0]["targetPort"] = data["pools"][0].pop("targetPorts")
    problems = problems_of(data)
    assert f"{SHOWN}: pools[0].targetPort: unknown key (allowed here: epp, name, selector, targetPorts)" in problems
    assert f"{SHOWN}: pools[0].targetPorts: required field is missing (add it as a list)" in problems


def test_wrong_type_is_reported():
    """A value of the wrong type says what was expected and what was found."""
    data = base()
    data["models"][0]["replicas"] = "2"
    assert only_problem(data) == f"{SHOWN}: models[0].replicas: expected an integer, found a string ('2')"


def test_boolean_is_not_an_integer():
    """YAML true is not accepted where a number is expected."""
    data = base()
    data["gateway"]["listenerPort"] = True
    assert only_problem(data) == f"{SHOWN}: gateway.listenerPort: expected an integer, found a boolean (true)"


def test_unquoted_label_value_says_to_quote_it():
    """A label value YAML reads as a boolean must be quoted."""
    data = base()
    data["pools"][0]["selector"]["llm-d.ai/inferenceServing"] = True
    assert only_problem(data) == (f'{SHOWN}: pools[0].selector["llm-d.ai/inferenceServing"]: label value must be a '
                                  f'string, found a boolean (true); quote it: "true"')


def test_model_naming_an_unknown_pool():
    """A model's pool must be one of the topology's pools."""
    data = base()
    data["models"][1]["pool"] = "gaie-x"
    problems = problems_of(data)
    assert problems[0] == f"{SHOWN}: models[1].pool: 'gaie-x' is not a pool of this topology (pools: gaie-gemma, gaie-phi)"


def test_rule_naming_an_unknown_pool():
    """A route rule's pool must be one of the topology's pools."""
    data = base()
    data["routes"][0]["rules"][0]["pool"] = "gaie-x"
    assert only_problem(data) == (f"{SHOWN}: routes[0].rules[0].pool: 'gaie-x' is not a pool of this topology "
                                  f"(pools: gaie-gemma, gaie-phi)")


def test_rule_naming_an_unknown_model():
    """A route rule's model must be one of the topology's models."""
    data = base()
    data["routes"][0]["rules"][0]["model"] = "google/gemma-7b"
    assert only_problem(data) == (f"{SHOWN}: routes[0].rules[0].model: 'google/gemma-7b' is not a model of this "
                                  f"topology (models: google/gemma-2b-it, microsoft/Phi-3-mini-4k-instruct)")


def test_rule_sending_a_model_to_another_models_pool():
    """A rule must send a model to the pool that serves it."""
    data = base()
    data["routes"][0]["rules"][0]["pool"] = "gaie-phi"
    assert only_problem(data) == (f"{SHOWN}: routes[0].rules[0].pool: model 'google/gemma-2b-it' is served by pool "
                                  f"'gaie-gemma', but this rule sends it to 'gaie-phi'")


def test_model_rule_without_bbr_header():
    """Matching on the model needs the BBR header."""
    data = base()
    del data["bbr"]
    problems = problems_of(data)
    assert problems[0].startswith(f"{SHOWN}: routes[0].rules[0].model: matching on the model needs the header BBR "
                                  f"copies it into; add bbr:")


def test_local_environment_defaults_to_local_and_names_a_local_helmfile_environment():
    """The local target installs with `helmfile -e local` unless the topology asks for gke-local (GKE's values)."""
    assert load_topology("pattern2").local_environment == "local"
    assert load_topology("pattern2-gke-local").local_environment == "gke-local"
    data = base() | {"localEnvironment": "gke"}
    assert only_problem(data) == (f"{SHOWN}: localEnvironment: 'gke' is not an environment the local target installs "
                                  "with; use one of local, gke-local")


def test_bbr_service_defaults_to_the_gie_chart_and_can_be_named():
    """Without service/port the body-based router is the GIE chart's body-based-router:9004."""
    t = load_topology("pattern2")
    assert (t.bbr_service, t.bbr_port) == ("body-based-router", 9004)
    assert (load_topology("pattern2-single-pool").bbr_service, load_topology("pattern2-single-pool").bbr_port) == (None, None)
    data = base()
    data["bbr"] |= {"service": "my-bbr", "port": 9100}
    named = parse_topology(yaml.safe_dump(data), REPO / SHOWN)
    assert (named.bbr_service, named.bbr_port) == ("my-bbr", 9100)
    data["bbr"]["port"] = 70000
    assert only_problem(data) == f"{SHOWN}: bbr.port: must be in [1, 65535], found 70000"


def test_router_and_epp_implementations_default_to_gie_and_are_checked():
    """bbr.implementation and pools[].epp.implementation name GIE's or llm-d's component; GIE's by default."""
    t = load_topology("pattern2")
    assert t.bbr_implementation == "gie-bbr" and {p.epp_implementation for p in t.pools} == {"gie-epp"}
    llmd = load_topology("pattern2-llmd")
    assert llmd.bbr_implementation == "payload-processor"
    assert {p.epp_implementation for p in llmd.pools} == {"llm-d-inference-scheduler"}
    data = base()
    data["bbr"]["implementation"] = "envoy-ai-gateway"
    data["pools"][1]["epp"]["implementation"] = "llm-d-router"
    assert problems_of(data) == [
        f"{SHOWN}: bbr.implementation: 'envoy-ai-gateway' is not one of gie-bbr, payload-processor",
        f"{SHOWN}: pools[1].epp.implementation: 'llm-d-router' is not one of gie-epp, llm-d-inference-scheduler"]


@pytest.mark.parametrize("section,key,value", [("pools", "name", "gaie-gemma"), ("models", "id", "google/gemma-2b-it")])
def test_duplicate_names(section, key, value):
    """Two pools (or models) with one name are refused, pointing at the first."""
    data = base()
    data[section][1][key] = value
    assert f"{SHOWN}: {section}[1].{key}: duplicate {'pool name' if section == 'pools' else 'model id'} " \
           f"{value!r} (also {section}[0])" in problems_of(data)


def test_duplicate_route_names():
    """Two routes with one name are refused."""
    data = base()
    data["routes"].append(data["routes"][0])
    assert f"{SHOWN}: routes[1].name: duplicate route name 'llm-d-pattern2' (also routes[0])" in problems_of(data)


def test_models_with_the_same_pod_labels():
    """podLabels must tell the models apart."""
    data = base()
    data["models"][1]["podLabels"] = dict(data["models"][0]["podLabels"])
    assert f"{SHOWN}: models[1].podLabels: same labels as models[0]; podLabels must tell the models apart" \
        in problems_of(data)


@pytest.mark.parametrize("weight", [0, -1.5])
def test_weight_must_be_positive(weight):
    """A model weight <= 0 is refused."""
    data = base()
    data["models"][0]["weight"] = weight
    assert only_problem(data) == f"{SHOWN}: models[0].weight: must be > 0, found {weight}"


def test_topology_without_models():
    """An empty model list is refused."""
    data = base()
    data["models"] = []
    assert f"{SHOWN}: models: the topology has no models (add at least one)" in problems_of(data)


BELOW_ONE = " (a confidence lower bound stays below 1 however many requests are sent)"


@pytest.mark.parametrize("key,value,interval", [
    ("accuracyLowerBound", 0, "(0, 1)"), ("accuracyLowerBound", 1.01, "(0, 1)"), ("accuracyLowerBound", 1, "(0, 1)"),
    ("confidence", 0.0, "(0, 1)"), ("confidence", 2, "(0, 1)"), ("confidence", 1, "(0, 1)"),
    ("unknownModelShare", 1, "[0, 1)"),
])
def test_thresholds_out_of_range(key, value, interval):
    """Probabilities outside their interval are refused; a bound or a confidence of 1 can never be shown."""
    data = base()
    data["expectations"]["routing"][key] = value
    why = BELOW_ONE if key == "accuracyLowerBound" else ""
    assert only_problem(data) == f"{SHOWN}: expectations.routing.{key}: must be in {interval}, found {value}{why}"


NOT_FINITE = [float("nan"), float("inf"), float("-inf")]  # YAML .nan, .inf, -.inf


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("key", ["accuracyLowerBound", "confidence", "unknownModelShare"])
def test_nan_and_infinite_probabilities_are_refused(key, value):
    """YAML .nan / .inf are floats that range comparisons let through (nan > 1 is false); refused by type."""
    data = base()
    data["expectations"]["routing"][key] = value
    assert ".nan" in yaml.safe_dump(float("nan"))
    assert only_problem(data) == (f"{SHOWN}: expectations.routing.{key}: expected a finite number, "
                                  f"found a number ({value})")


@pytest.mark.parametrize("value", NOT_FINITE)
def test_weight_must_be_finite(value):
    """A weight of NaN or infinity would make the request mix meaningless."""
    data = base()
    data["models"][0]["weight"] = value
    assert only_problem(data) == f"{SHOWN}: models[0].weight: expected a finite number, found a number ({value})"


def test_requests_too_few_to_ever_reach_the_bound():
    """5 requests, all correct, give a Wilson 95% lower bound of 0.5655: the check could never pass.
    The minimum comes from the bound (n/(n + z^2) >= 0.98 from n = 189) and is named."""
    data = base()
    data["expectations"]["routing"]["requests"] = 5
    assert only_problem(data) == (
        f"{SHOWN}: expectations.routing.requests: 5 can never reach accuracyLowerBound 0.98: even 5/5 correct "
        f"gives a wilson 95% lower bound of 0.5655 < 0.98; at least 189 requests are needed; raise requests or "
        f"lower accuracyLowerBound")
    data["expectations"]["routing"]["requests"] = 189
    assert parse_topology(yaml.safe_dump(data), REPO / SHOWN).routing.requests == 189


LABEL_RULE = "use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
SUBDOMAIN_RULE = "use at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"


@pytest.mark.parametrize("where,value,message", [
    (("name",), "../x", f"'../x' is not a DNS-1123 label: {LABEL_RULE}"),
    (("name",), "a/b", f"'a/b' is not a DNS-1123 label: {LABEL_RULE}"),
    (("name",), "Pattern2", f"'Pattern2' is not a DNS-1123 label: {LABEL_RULE}"),
    (("name",), "x" * 64, f"'{'x' * 64}' is not a DNS-1123 label: {LABEL_RULE}"),
    (("namespace",), "llm_d", f"'llm_d' is not a DNS-1123 label: {LABEL_RULE}"),
    (("gateway", "name"), "gw/../x", f"'gw/../x' is not a DNS-1123 subdomain: {SUBDOMAIN_RULE}"),
    (("pools", 0, "name"), "../gaie-gemma", f"'../gaie-gemma' is not a DNS-1123 subdomain: {SUBDOMAIN_RULE}"),
    (("pools", 0, "epp", "service"), "epp.svc", f"'epp.svc' is not a DNS-1123 label: {LABEL_RULE}"),
    (("routes", 0, "name"), "-route", f"'-route' is not a DNS-1123 subdomain: {SUBDOMAIN_RULE}"),
    (("models", 0, "release"), "ms/gemma", "'ms/gemma' is not a DNS-1123 label: use at most 53 lowercase "
                                           "letters, digits and '-', starting and ending with a letter or digit"),
])
def test_names_must_be_dns_1123(where, value, message):
    """Names become Kubernetes objects and file names (the report is <name>-<target>-report.yaml):
    '../x' or a '/' is refused with the rule to follow."""
    data = base()
    holder = data
    for key in where[:-1]:
        holder = holder[key]
    holder[where[-1]] = value
    path = ".".join(str(k) if isinstance(k, str) else f"[{k}]" for k in where).replace(".[", "[")
    assert f"{SHOWN}: {path}: {message}" in problems_of(data)


def test_requests_below_one():
    """At least one routing request."""
    data = base()
    data["expectations"]["routing"]["requests"] = 0
    assert only_problem(data) == f"{SHOWN}: expectations.routing.requests: must be >= 1, found 0"


def test_more_misroutes_allowed_than_requests():
    """maxMisroutes cannot exceed requests."""
    data = base()
    data["expectations"]["routing"]["maxMisroutes"] = 301
    assert only_problem(data) == f"{SHOWN}: expectations.routing.maxMisroutes: 301 exceeds requests (300); lower it"


def test_target_ports_duplicate_and_range():
    """Target ports are unique and valid port numbers."""
    data = base()
    data["pools"][0]["targetPorts"] = [8000, 8000, 70000]
    problems = problems_of(data)
    assert f"{SHOWN}: pools[0].targetPorts[1]: duplicate port 8000" in problems
    assert f"{SHOWN}: pools[0].targetPorts[2]: must be in [1, 65535], found 70000" in problems


def test_distinct_nodes_need_enough_gpu_nodes():
    """Two models on distinct nodes need two GPU nodes."""
    data = base()
    data["accelerator"]["gpuNodes"] = 1
    assert only_problem(data) == (f"{SHOWN}: accelerator.gpuNodes: 1 GPU node(s) cannot hold 2 models on distinct "
                                  f"nodes (expectations.distinctGpuNodesPerModel is true); raise gpuNodes or set it false")


def test_every_problem_is_reported_at_once():
    """Several problems come back together, one per line."""
    data = base()
    data["namespace"] = 3
    data["models"][0]["weight"] = 0
    data["expectations"]["routing"]["requests"] = 0
    assert problems_of(data) == [
        f"{SHOWN}: namespace: expected a non-empty string, found a number (3)",
        f"{SHOWN}: models[0].weight: must be > 0, found 0",
        f"{SHOWN}: expectations.routing.requests: must be >= 1, found 0",
    ]


def test_per_model_criterion_defaults_to_ten_percent_at_95_percent_power():
    """Without perModel every model's own verdict catches a 10% failure rate with 95% power: 29 requests."""
    routing = parse_topology(yaml.safe_dump(base()), REPO / SHOWN).routing
    assert (routing.per_model_rate, routing.per_model_power, routing.floor) == (0.1, 0.95, 29)
    data = base()
    data["expectations"]["routing"]["perModel"] = {"misrouteRate": 0.05, "power": 0.99}
    assert parse_topology(yaml.safe_dump(data), REPO / SHOWN).routing.floor == 90


@pytest.mark.parametrize(("per_model", "problem"), [
    ({"misrouteRate": 0}, "expectations.routing.perModel.misrouteRate: must be in (0, 1), found 0 (the smallest "
                          "share of one model's requests going wrong that must be caught, e.g. 0.1)"),
    ({"power": 1}, "expectations.routing.perModel.power: must be in (0, 1), found 1 (the chance to catch that rate, "
                   "e.g. 0.95)"),
    ({"rate": 0.1}, "expectations.routing.perModel.rate: unknown key (allowed here: misrouteRate, power)"),
    ({"power": "high"}, "expectations.routing.perModel.power: expected a finite number, found a string ('high')"),
])
def test_bad_per_model_criteria_say_what_to_fix(per_model, problem):
    data = base()
    data["expectations"]["routing"]["perModel"] = per_model
    assert only_problem(data) == f"{SHOWN}: {problem}"


def test_the_growth_topologies_have_uneven_weights_with_one_model_at_one_percent():
    """pattern2-{4,8,16}-models: each model its own pool and GPU node; the lightest (SmolLM) at 1%."""
    for count in (4, 8, 16):
        topology = load_topology(f"pattern2-{count}-models")
        weights = {m.id: m.weight for m in topology.models}
        assert len(weights) == count == topology.gpu_nodes == len(topology.pools)
        assert sum(weights.values()) == pytest.approx(100)
        assert min(weights, key=weights.get) == "HuggingFaceTB/SmolLM2-135M-Instruct" and min(weights.values()) == 1


def test_adapters_rewrites_and_flow_control_budget_are_read():
    """models[].adapters, rewrites (weighted targets in the rewrite's pool) and flowControlBudget."""
    data = base()
    data["models"][0]["adapters"] = ["food-review-1"]
    data["rewrites"] = [{"name": "gemma-alias", "pool": "gaie-gemma", "model": "gemma-latest",
                         "targets": [{"model": "google/gemma-2b-it", "weight": 90}, {"model": "food-review-1"}]}]
    data["expectations"]["routing"]["flowControlBudget"] = 0.02
    t = parse_topology(yaml.safe_dump(data), REPO / SHOWN)
    assert t.models[0].adapters == ("food-review-1",) and t.models[1].adapters == ()
    assert t.model_serving("food-review-1") is t.models[0] and t.model_serving("nope") is None
    rewrite = t.rewrite_for("gemma-latest")
    assert rewrite is not None and [(x.model, x.weight) for x in rewrite.targets] == [
        ("google/gemma-2b-it", 90), ("food-review-1", 1)]
    assert t.flow_control_budget == 0.02 and load_topology("pattern2").flow_control_budget == 0.0


def test_bad_adapters_and_rewrites_are_named():
    """An adapter reusing a model id, a rewrite into another pool's model and a budget above 1 are refused."""
    data = base()
    data["models"][0]["adapters"] = ["microsoft/Phi-3-mini-4k-instruct"]
    data["rewrites"] = [{"name": "gemma-alias", "pool": "gaie-gemma", "model": "gemma-latest",
                         "targets": [{"model": "microsoft/Phi-3-mini-4k-instruct"}]}]
    data["expectations"]["routing"]["flowControlBudget"] = 1.5
    assert problems_of(data) == [
        f"{SHOWN}: models[0].adapters[0]: 'microsoft/Phi-3-mini-4k-instruct' is already a model id or adapter: "
        "every name must be unique",
        f"{SHOWN}: rewrites[0].targets[0].model: 'microsoft/Phi-3-mini-4k-instruct' is served by pool 'gaie-phi'; "
        "a rewrite in pool 'gaie-gemma' must name a model or adapter of that pool",
        f"{SHOWN}: expectations.routing.flowControlBudget: must be in [0, 1], found 1.5"]
