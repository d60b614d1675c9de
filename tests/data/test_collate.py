import random

import torch

from bigbird_ft.inputs.collate import BlockPaddingCollator


def test_pads_each_batch_to_smallest_block_multiple(tiny_tokenizer):
    collator = BlockPaddingCollator(tiny_tokenizer, pad_to_multiple_of=16)
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 700) for _ in range(rng.randint(1, 6))]
        features = [
            {"input_ids": [rng.randint(7, 300) for _ in range(n)], "labels": i % 3, "row": i, "text": "dropped"}
            for i, n in enumerate(lengths)
        ]
        batch = collator(features)
        width = batch["input_ids"].shape[1]
        assert width % 16 == 0
        assert width - 16 < max(lengths) <= width, (lengths, width)
        assert batch["attention_mask"].sum(1).tolist() == lengths
        pads = batch["input_ids"][batch["attention_mask"] == 0]
        assert torch.all(pads == tiny_tokenizer.pad_token_id)
        assert batch["labels"].tolist() == [i % 3 for i in range(len(lengths))]
        assert batch["row"].tolist() == list(range(len(lengths)))
        assert "text" not in batch
