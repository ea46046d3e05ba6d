"""The Grafana dashboard shipped in the recipe egg
(grafana-dashboard.json): every metric its panels query is one a real
server's metrics-address exports, so renaming a metric fails here.
"""

import json
import re

from helpers import ROOT, commit, free_port, output
from test_monitor import get


DASHBOARD = "plone/recipe/zope2zeoserver/grafana-dashboard.json"
# The labels a query may filter, group or name a series by: the
# endpoint's own, and those Prometheus adds to every scraped sample.
LABELS = {"storage", "job", "instance"}
# PromQL words that are not metric names.  Functions are recognised by
# the "(" after them; these keywords, and aggregation operators followed
# by `by (...)` or `without (...)`, are not.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right",
            "bool", "and", "or", "unless", "offset", "inf", "nan",
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
            "count_values", "bottomk", "topk", "quantile", "limitk",
            "limit_ratio"}


def metric_names(expr):
    """The metric names the PromQL expression EXPR queries: what is left
    once strings, label matchers, ranges, label lists, Grafana variables,
    numbers, functions and keywords are taken out."""
    assert expr.count("(") == expr.count(")"), expr
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^{}]*\}", "{}", text)
    text = re.sub(r"\[[^\[\]]*\]", "[]", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)"
                  r"\s*\([^()]*\)", r"\1", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    names = set()
    for match in re.finditer(r"\d[\w.]*|([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if name and not call and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def label_values(query):
    """(the PromQL expression, the label) of a variable's query,
    Grafana's `label_values(EXPR, LABEL)`."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, query
    return match.groups()


def label_names(expr):
    """The label names EXPR's matchers and by/without lists use."""
    found = set()
    for matchers in re.findall(r"\{([^{}]*)\}", expr):
        found |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    for labels in re.findall(r"\b(?:by|without)\s*\(([^()]*)\)", expr):
        found |= {label.strip() for label in labels.split(",")}
    return found


def test_metric_names_of_promql():
    """The parser itself, on the forms a dashboard uses."""
    assert metric_names(
        'sum by (storage) (rate(zeo_commits_total{job=~"$job", '
        'storage!="x{y}"}[$__rate_interval] offset 5m)) / 1e3') == {
        "zeo_commits_total"}
    assert metric_names("max(a_b:c) > bool 0.5 or on(instance) d") == {
        "a_b:c", "d"}
    assert label_values('label_values(zeo_clients{job=~"$job"}, job)') == (
        'zeo_clients{job=~"$job"}', "job")
    assert label_names('sum by (storage) (x{job=~"$job", instance="a"})'
                       ) == {"storage", "job", "instance"}


def exported(port):
    """(every metric name the endpoint declares, those with a sample)."""
    status, _, body = get(port)
    assert status == 200, body
    declared = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
    sampled = set(re.findall(r"^([a-z_]+)\{", body, re.M))
    return declared, sampled


def panels(dashboard):
    """Every panel, those inside rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_every_panel_queries_what_the_server_exports(buildout):
    metrics_port = free_port()
    buildout.install(f"metrics-address = {metrics_port}")
    result = buildout.ctl("start")
    assert result.returncode == 0, output(result)
    commit(("127.0.0.1", buildout.port), x=1)
    declared, sampled = exported(metrics_port)

    # The file the egg buildout installed ships, the checkout's.
    [shipped] = buildout.eggs_dir.glob(f"**/{DASHBOARD}")
    text = shipped.read_text()
    assert text == (ROOT / "src" / DASHBOARD).read_text()
    dashboard = json.loads(text)

    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)) and all(
        isinstance(i, int) for i in ids), ids
    # On Grafana's 24-column grid, no panel hides another.
    cells = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, panel["title"]
        cells |= area
    # The data source is chosen on import, never a uid of ours.
    [source] = dashboard["__inputs"]
    assert (source["type"], source["pluginId"]) == ("datasource",
                                                    "prometheus")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["current"]["value"] == (
        "${" + source["name"] + "}")
    assert {"job", "instance", "storage"} <= set(variables)

    queried = {}  # metric name -> the titles of the panels asking it
    exprs = []
    for variable in variables.values():
        if variable["type"] == "query":
            expr, label = label_values(variable["query"])
            assert label == variable["name"] and label in LABELS
            exprs.append((f"variable {label}", expr))
    for panel in panels(dashboard):
        assert panel.get("title"), panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus",
                                       "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            exprs.append((panel["title"], target["expr"]))
            legend = target.get("legendFormat", "")
            assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)) <= LABELS
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, (title, expr)
        assert label_names(expr) <= LABELS, (title, expr)
        for name in names:
            queried.setdefault(name, []).append(title)
    unknown = {name: titles for name, titles in queried.items()
               if name not in declared}
    assert not unknown, f"queried but not exported: {unknown}"
    # A standalone server samples all but the replication figures (a
    # ZRS primary's and secondary's, see test_replication).
    assert {name for name in queried if "_replication_" not in name} \
        <= sampled, sampled
    # Each figure the issue asked for has its panel.
    assert {"zeo_commits_total", "zeo_loads_total", "zeo_clients",
            "zeo_waiting_transactions", "zeo_commit_lock_held_seconds",
            "zeo_storage_size_bytes", "zeo_replication_lag_seconds"} \
        <= set(queried)
