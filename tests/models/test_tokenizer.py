import pytest

from bigbird_ft.errors import UserError
from bigbird_ft.models.tokenizer import resolve_tokenizer
from tests.conftest import shared_path


def test_trained_tokenizer_has_bigbird_special_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.pad_token_id == 0
    for token in ("[CLS]", "[SEP]", "[MASK]", "<unk>", "<pad>"):
        assert tok.convert_tokens_to_ids(token) is not None
    ids = tok("movx kifagomx rorx")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids[1:-1]


def test_real_bigbird_vocabulary_from_spiece_file(tmp_path):
    spiece = shared_path("tokenizers/bigbird-roberta-base/spiece.model")
    for spec in (str(spiece), str(spiece.parent)):
        tok = resolve_tokenizer(spec, cache_dir=tmp_path)
        assert len(tok) == 50358
        ids = tok("The hyperpartisan article argues about climate policy.")["input_ids"]
        assert ids[0] == 65 and ids[-1] == 66
        assert 100 not in ids  # real words never map to <unk>


def test_bad_tokenizer_spec_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="model.tokenizer"):
        resolve_tokenizer(str(tmp_path / "missing.model"), cache_dir=tmp_path)
    with pytest.raises(UserError, match="model.tokenizer"):
        resolve_tokenizer(str(tmp_path / "not-a-dir"), cache_dir=tmp_path)
