"""The contract checks ptmkit runs on its own plugins (``ptmkit.testing``), run on this package's."""

from ptmkit.testing import check_feature, check_loss, standard_tests, window_table

from ptmkit_plugin_example import CKSAAP, GatedSum, LabelSmoothingBCE


def test_cksaap_meets_the_feature_contract():
    # float32 [N, W, dim], zeros at padding, deterministic, stable cache key, empty table
    check_feature(CKSAAP)
    check_feature(CKSAAP(CKSAAP.Config(gaps=2, groups=None)), window_table(["--AKHDE", "MKLAHRR"]))


def test_label_smoothing_meets_the_loss_contract():
    # finite scalar, gradients reach the logits, deterministic
    check_loss(LabelSmoothingBCE)
    check_loss(LabelSmoothingBCE(LabelSmoothingBCE.Config(smoothing=0.0, schedule="linear")))


# (id, node class, input dims, config, size of "out"): output shapes, gradients to every
# parameter, padding never leaking into real positions, determinism under a seed
CASES = [("gated_sum", GatedSum, [4, 6], {"dim": 5}, 5), ("gated_sum_same", GatedSum, [3, 3, 3], {}, 3)]
test_shapes, test_gradients, test_padding, test_deterministic = standard_tests(CASES)
