"""The operating points a decision may name: api.calibration.OPERATING_POINTS, which the
threshold rule checks and the command line offers."""
import pytest

from wespeaker_py.api.calibration import OPERATING_POINTS
from wespeaker_py.api.decisions import check_decision_rule
from wespeaker_py.cli.main import build_parser
from wespeaker_py.errors import WespeakerError


def test_an_operating_point_the_calibration_does_not_measure_is_refused_at_once():
    # before anything is embedded, with or without a calibration, naming those there are
    with pytest.raises(WespeakerError, match=r"--operating_point, operating_point=\) is one "
                                             r"of eer, fa1, got 'fa5'"):
        check_decision_rule(None, "fa5", None)
    for point in OPERATING_POINTS:
        check_decision_rule(None, point, None)


@pytest.mark.parametrize("command", ["verify", "identify"])
def test_the_command_line_offers_the_operating_points(command):
    subcommands = build_parser()._subparsers._group_actions[0].choices
    (flag,) = [action for action in subcommands[command]._actions
               if action.dest == "operating_point"]
    assert tuple(flag.choices) == OPERATING_POINTS
