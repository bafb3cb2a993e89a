"""The benchmarks' arithmetic: Prometheus histograms read back into percentiles, costs per step."""

from __future__ import annotations

import pytest

from bench.common import histogram, minus, parse_metrics, quantile, step_costs

TEXT = """# HELP sagawire_step_latency_seconds From sending a step's command to applying its reply.
sagawire_step_latency_seconds_bucket{le="0.01"} 50.0
sagawire_step_latency_seconds_bucket{le="0.02"} 90.0
sagawire_step_latency_seconds_bucket{le="0.05"} 100.0
sagawire_step_latency_seconds_bucket{le="+Inf"} 100.0
sagawire_step_latency_seconds_sum 1.2
"""


def test_a_histogram_is_read_in_bound_order():
    buckets = histogram(parse_metrics(TEXT), "sagawire_step_latency_seconds")
    assert buckets == [(0.01, 50.0), (0.02, 90.0), (0.05, 100.0), (float("inf"), 100.0)]


LABELLED = """# TYPE sagawire_step_latency_seconds histogram
sagawire_step_latency_seconds_bucket{le="0.01",machine="order",step="a"} 5.0
sagawire_step_latency_seconds_bucket{le="+Inf",machine="order",step="a"} 6.0
sagawire_step_latency_seconds_bucket{le="0.01",machine="order",step="b"} 1.0
sagawire_step_latency_seconds_bucket{le="+Inf",machine="order",step="b"} 3.0
sagawire_step_latency_seconds_count{machine="order",step="b"} 3.0
sagawire_step_latency_seconds_bucket_other{le="0.01"} 100.0
"""


def test_the_series_of_a_labelled_histogram_are_added_up():
    buckets = histogram(parse_metrics(LABELLED), "sagawire_step_latency_seconds")
    assert buckets == [(0.01, 6.0), (float("inf"), 9.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.01), (0.25, 0.005), (0.7, 0.015), (0.95, 0.035), (1.0, 0.05)],
)
def test_quantiles_interpolate_inside_their_bucket(q, expected):
    buckets = histogram(parse_metrics(TEXT), "sagawire_step_latency_seconds")
    assert quantile(buckets, q) == pytest.approx(expected)


def test_the_observations_between_two_readings():
    before = [(0.01, 10.0), (0.02, 20.0), (float("inf"), 20.0)]
    after = [(0.01, 10.0), (0.02, 60.0), (float("inf"), 70.0)]
    assert minus(after, before) == [(0.01, 0.0), (0.02, 40.0), (float("inf"), 50.0)]
    assert quantile(minus(after, before), 0.5) == pytest.approx(0.01 + 0.01 * 25 / 40)


def test_an_empty_histogram_has_no_quantile():
    assert quantile([], 0.5) is None
    assert quantile([(0.01, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_the_durable_path_is_reported_against_the_memory_store_of_the_same_run():
    memory = {"steps_per_s": 800.0, "cpu_s_per_step": {"daemon": 0.0008, "rabbitmq": 0.0007}}
    mongodb = {
        "steps_per_s": 200.0,
        "cpu_s_per_step": {"daemon": 0.0024, "rabbitmq": 0.0009, "ferretdb": 0.005},
    }
    assert step_costs(memory, mongodb) == {
        "ratio_mongo_vs_memory": 0.25,
        "daemon_cpu_ms_per_step_memory": 0.8,
        "daemon_cpu_ms_per_step_mongo": 2.4,
        "db_cpu_ms_per_step": 5.0,
    }
