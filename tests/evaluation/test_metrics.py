import pytest

from components.evaluation.metrics import Run, SweepPoint, control, performance, scaling, sweep_metrics


def test_hand_computed_sweep():
    pts = [SweepPoint(16, 10.0, 0.2), SweepPoint(32, 20.0, 0.5), SweepPoint(64, 40.0, 0.6)]
    # slopes: (0.5-0.2)/10 = 0.03, (0.6-0.2)/30 = 0.01333.., (0.6-0.5)/20 = 0.005
    assert scaling(pts) == pytest.approx((0.03 + 0.4 / 30 + 0.005) / 3)
    assert performance(pts) == 0.6
    runs = [Run(10, 0, 16), Run(16, 0, 16), Run(17, 0, 16), Run(5, 8, 32)]
    assert control(runs) == 0.5  # 17 > 16 and 5 < min 8 are outside


def test_one_budget_has_no_slope():
    pts = [SweepPoint(16, 10.0, 0.4)]
    assert scaling(pts) is None
    assert sweep_metrics(pts, [Run(10, 0, 16)]) == {"control": 1.0, "scaling": None, "performance": 0.4}


def test_flat_curve_scales_zero_and_order_does_not_matter():
    pts = [SweepPoint(64, 40.0, 0.5), SweepPoint(16, 10.0, 0.5), SweepPoint(32, 20.0, 0.5)]
    assert scaling(pts) == 0.0


def test_budget_never_met_counts_against_control():
    # every run overshot its budget: control 0; a run without max only needs the min
    assert control([Run(50, 0, 32), Run(40, 0, 32)]) == 0.0
    assert control([Run(50, 10, None)]) == 1.0


def test_points_with_equal_thinking_are_skipped_and_negative_slope_kept():
    pts = [SweepPoint(16, 10.0, 0.5), SweepPoint(32, 10.0, 0.7), SweepPoint(64, 20.0, 0.3)]
    # pairs with b > a strictly: (10,0.5)->(20,0.3) and (10,0.7)->(20,0.3)
    assert scaling(pts) == pytest.approx(((0.3 - 0.5) / 10 + (0.3 - 0.7) / 10) / 2)


def test_empty_inputs_are_errors():
    with pytest.raises(ValueError):
        control([])
    with pytest.raises(ValueError):
        performance([])
