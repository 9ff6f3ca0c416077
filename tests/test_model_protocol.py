"""Every registered model follows the SpeakerModel protocol, with consistent shapes."""
import pytest
import torch

from wespeaker_py.models import SpeakerModel, get_model, list_models
from wespeaker_py.models.complexity import recipe_input_dim, recipe_model_args


@pytest.mark.parametrize("name", list_models())
def test_model_follows_the_speaker_model_protocol(name):
    # Shapes only, on the meta device: no weights are initialised and nothing is computed.
    feat_dim = recipe_input_dim(name)  # 80, 72 for ReDimNet, 25 x 1024 for W2VBert
    model_args = recipe_model_args(name)
    with torch.device("meta"):
        model = get_model(name, **model_args)
        assert isinstance(model, SpeakerModel)
        short = model.frame_level_features(torch.empty(2, 64, feat_dim))
        long = model.frame_level_features(torch.empty(2, 128, feat_dim))
        embeddings = model(torch.empty(2, 64, feat_dim))
    assert short.ndim == 3 and short.shape[0] == 2
    # frames first: the time axis grows with the input, the feature axis does not
    assert long.shape[2] == short.shape[2]
    assert long.shape[1] > short.shape[1]
    assert tuple(embeddings.shape) == (2, model_args["embed_dim"])
