"""The book's own code, as printed, runs against the package and computes what the book's does.

``test_chapter_6_as_printed`` types in chapter 6 call by call (a tiny GPT-2 in place of the
124M one, the real SMS Spam Collection); each step is checked against the figure the book
prints or against an independent computation written here. The chapter-4 check builds the
book's 124M model from its seed and compares the generated ids with those the book prints,
and with a transcription of the book's own classes (below), which also supplies the state
dicts "saved by the book's code". The tests after those show each of the project's
improvements: the book's behaviour by default, and the keyword that changes it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ch06_classification import download  # the book's download step
from ch06_classification.dataset import SpamDataset
from ch06_classification.download import download_and_unzip_spam_data
from ch06_classification.finetuning.loaders import create_data_loader
from ch06_classification.finetuning.model import GPTClassifier
from ch06_classification.inference import classify_review
from ch06_classification.plots import plot_values
from ch06_classification.sources.sms import download_sms_spam, read_sms_spam
from ch06_classification.speed.fast_path import prepare_fast_path
from ch06_classification.splits import create_balanced_dataset, random_split
from ch06_classification.training import (
    calc_accuracy_loader,
    calc_loss_batch,
    calc_loss_loader,
    train_classifier_simple,
)
from gpt.config import GPTConfig
from gpt.generate import generate_text_simple, text_to_token_ids, token_ids_to_text
from gpt.model import GPTModel, count_parameters
from gpt.tokenizer import END_OF_TEXT_ID
from gpt.weights import WeightsError, download_and_load_gpt2, load_weights_into_gpt
from tests.checkpoints import hf_gpt2, write_openai_checkpoint
from tests.local_server import LocalServer
from tests.sms_data import SMS_SPAM_ZIP, VALID_ZIP, real_dataset

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

GPT_CONFIG_124M = {
    "vocab_size": 50257,  # Vocabulary size
    "context_length": 1024,  # Context length
    "emb_dim": 768,  # Embedding dimension
    "n_heads": 12,  # Number of attention heads
    "n_layers": 12,  # Number of layers
    "drop_rate": 0.1,  # Dropout rate
    "qkv_bias": False,  # Query-Key-Value bias
}
# What the book prints for chapter 4's untrained model (listing 4.8 and after).
BOOK_CHAPTER_4_IDS = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]
TINY_SHAPE = {"emb_dim": 32, "n_layers": 2, "n_heads": 4}


# --- The book's chapter-4 model, transcribed from the book: the independent reference ------


class BookLayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class BookGELU(nn.Module):
    def forward(self, x):
        c = torch.sqrt(torch.tensor(2.0 / torch.pi))
        return 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3))))


class BookFeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            BookGELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


class BookMultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length), diagonal=1)
        )

    def forward(self, x):
        b, num_tokens, _ = x.shape

        def heads(t):
            return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        keys, queries, values = heads(self.W_key(x)), heads(self.W_query(x)), heads(self.W_value(x))
        attn_scores = queries @ keys.transpose(2, 3)
        attn_scores.masked_fill_(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = self.dropout(torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1))
        context_vec = (attn_weights @ values).transpose(1, 2)
        return self.out_proj(context_vec.contiguous().view(b, num_tokens, self.d_out))


class BookTransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = BookMultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"],
        )
        self.ff = BookFeedForward(cfg)
        self.norm1 = BookLayerNorm(cfg["emb_dim"])
        self.norm2 = BookLayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class BookGPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(
            *[BookTransformerBlock(cfg) for _ in range(cfg["n_layers"])]
        )
        self.final_norm = BookLayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        positions = torch.arange(in_idx.shape[1], device=in_idx.device)
        x = self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(positions))
        return self.out_head(self.final_norm(self.trf_blocks(x)))


def book_generate_text_simple(model, idx, max_new_tokens, context_size):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])[:, -1, :]
        idx_next = torch.argmax(torch.softmax(logits, dim=-1), dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def book_train_classifier_simple(
    model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter
):
    """Listing 6.10 with the book's helpers of 6.6 inlined: the reference for the loop."""

    def loss_of(input_batch, target_batch):
        logits = model(input_batch.to(device))[:, -1, :]
        return F.cross_entropy(logits, target_batch.to(device))

    def mean_loss(loader, num_batches):
        losses = [loss_of(x, y).item() for i, (x, y) in enumerate(loader) if i < num_batches]
        return sum(losses) / len(losses)

    def accuracy(loader, num_batches):
        model.eval()
        correct = seen = 0
        for i, (x, y) in enumerate(loader):
            if i >= num_batches:
                break
            with torch.no_grad():
                predicted = model(x.to(device))[:, -1, :].argmax(dim=-1)
            correct += (predicted == y.to(device)).sum().item()
            seen += predicted.shape[0]
        return correct / seen

    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    for _ in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = loss_of(input_batch, target_batch)
            loss.backward()
            optimizer.step()
            examples_seen += input_batch.shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                model.eval()
                with torch.no_grad():
                    train_losses.append(mean_loss(train_loader, eval_iter))
                    val_losses.append(mean_loss(val_loader, eval_iter))
                model.train()
        train_accs.append(accuracy(train_loader, eval_iter))
        val_accs.append(accuracy(val_loader, eval_iter))
    return train_losses, val_losses, train_accs, val_accs, examples_seen


# --- Chapter 4: the untrained 124M model ---------------------------------------------------


@pytest.mark.slow
def test_chapter_4_generation_reproduces_the_books_token_ids(tokenizer) -> None:
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_124M)
    assert count_parameters(model) == 163_009_536  # as the book counts, before weight tying

    start_context = "Hello, I am"
    encoded_tensor = torch.tensor(tokenizer.encode(start_context)).unsqueeze(0)
    model.eval()
    out = generate_text_simple(
        model=model,
        idx=encoded_tensor,
        max_new_tokens=10,
        context_size=GPT_CONFIG_124M["context_length"],
    )

    torch.manual_seed(123)
    book_model = BookGPTModel(GPT_CONFIG_124M).eval()
    expected = book_generate_text_simple(book_model, encoded_tensor, 10, 1024)
    assert expected[0, :10].tolist() == BOOK_CHAPTER_4_IDS  # the transcription is faithful
    assert out.tolist() == expected.tolist()  # ... and so is the package, 4 tokens further
    # Not by chance: every random weight is the book's, tensor for tensor.
    book_state = book_model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, book_state[name]), name


# --- Chapter 6, as printed -----------------------------------------------------------------


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder (the book writes its files to the working directory), with the
    dataset coming from the local zip instead of the network."""
    real_dataset()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMS_SPAM_SOURCE", str(SMS_SPAM_ZIP))
    return tmp_path


@pytest.fixture
def book_weights(in_tmp_dir: Path):
    """OpenAI-layout weights of a tiny GPT-2 where the book keeps its download (gpt2/124M),
    with the book's hparams.json: the transformers model they came from, and its config."""
    cfg = GPTConfig(**TINY_SHAPE)
    hf_model = hf_gpt2(cfg, seed=3)
    folder = in_tmp_dir / "gpt2" / "124M"
    write_openai_checkpoint(hf_model, folder / "model.safetensors")
    hparams = '{"n_vocab": 50257, "n_ctx": 1024, "n_embd": 32, "n_head": 4, "n_layer": 2}'
    (folder / "hparams.json").write_text(hparams)
    return hf_model


@pytest.mark.slow
def test_chapter_6_as_printed(in_tmp_dir: Path, book_weights, tokenizer) -> None:
    # 6.2 Preparing the dataset
    url = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
    zip_path = "sms_spam_collection.zip"
    extracted_path = "sms_spam_collection"
    data_file_path = Path(extracted_path) / "SMSSpamCollection.tsv"
    download_and_unzip_spam_data(url, zip_path, extracted_path, data_file_path)

    df = pd.read_csv(data_file_path, sep="\t", header=None, names=["Label", "Text"])
    # The book's reading: pandas' default quoting merges two ham messages into one.
    assert df["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}

    balanced_df = create_balanced_dataset(df)
    assert balanced_df["Label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    balanced_df["Label"] = balanced_df["Label"].map({"ham": 0, "spam": 1})
    expected_ham = df[df["Label"] == "ham"].sample(747, random_state=123)
    assert list(balanced_df.index[:747]) == list(expected_ham.index)

    train_df, validation_df, test_df = random_split(balanced_df, 0.7, 0.1)
    assert (len(train_df), len(validation_df), len(test_df)) == (1045, 149, 300)
    train_df.to_csv("train.csv", index=None)
    validation_df.to_csv("validation.csv", index=None)
    test_df.to_csv("test.csv", index=None)

    # 6.3 Creating data loaders (the book: tiktoken.get_encoding("gpt2"), the same encoding)
    train_dataset = SpamDataset(csv_file="train.csv", max_length=None, tokenizer=tokenizer)
    assert train_dataset.max_length == 120
    val_dataset = SpamDataset(
        csv_file="validation.csv", max_length=train_dataset.max_length, tokenizer=tokenizer
    )
    test_dataset = SpamDataset(
        csv_file="test.csv", max_length=train_dataset.max_length, tokenizer=tokenizer
    )
    num_workers = 0
    batch_size = 8
    torch.manual_seed(123)
    train_loader = DataLoader(
        dataset=train_dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        drop_last=True,
    )
    val_loader = DataLoader(
        dataset=val_dataset, batch_size=batch_size, num_workers=num_workers, drop_last=False
    )
    test_loader = DataLoader(
        dataset=test_dataset, batch_size=batch_size, num_workers=num_workers, drop_last=False
    )
    for input_batch, target_batch in train_loader:  # noqa: B007 (the book's, to print the last)
        pass
    assert input_batch.shape == (8, 120) and target_batch.shape == (8,)
    assert (len(train_loader), len(val_loader), len(test_loader)) == (130, 19, 38)

    # 6.4 Initializing a model with pretrained weights (a tiny GPT-2 for "gpt2-small (124M)")
    CHOOSE_MODEL = "gpt2-small (124M)"
    BASE_CONFIG = {
        "vocab_size": 50257,  # Vocabulary size
        "context_length": 1024,  # Context length
        "drop_rate": 0.0,  # Dropout rate
        "qkv_bias": True,  # Query-key-value bias
    }
    model_configs = {"gpt2-small (124M)": TINY_SHAPE}
    BASE_CONFIG.update(model_configs[CHOOSE_MODEL])
    assert train_dataset.max_length <= BASE_CONFIG["context_length"]

    model_size = CHOOSE_MODEL.split(" ")[-1].lstrip("(").rstrip(")")
    settings, params = download_and_load_gpt2(model_size=model_size, models_dir="gpt2")
    assert settings["n_layer"] == 2 and params["blocks"][0]["attn"]["c_attn"]["w"].shape == (32, 96)
    model = GPTModel(BASE_CONFIG)
    load_weights_into_gpt(model, params)
    model.eval()

    text_1 = "Every effort moves you"
    token_ids = generate_text_simple(
        model=model,
        idx=text_to_token_ids(text_1, tokenizer),
        max_new_tokens=15,
        context_size=BASE_CONFIG["context_length"],
    )
    # The same continuation as transformers' GPT-2 with the same weights, greedy.
    prompt = text_to_token_ids(text_1, tokenizer)
    reference = book_weights.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=15, do_sample=False
    )
    assert token_ids.tolist() == reference.tolist()
    assert token_ids_to_text(token_ids, tokenizer).startswith(text_1)

    # 6.5 Adding a classification head
    for param in model.parameters():
        param.requires_grad = False
    torch.manual_seed(123)
    num_classes = 2
    model.out_head = torch.nn.Linear(in_features=BASE_CONFIG["emb_dim"], out_features=num_classes)
    for param in model.trf_blocks[-1].parameters():
        param.requires_grad = True
    for param in model.final_norm.parameters():
        param.requires_grad = True

    inputs = tokenizer.encode("Do you have time")
    inputs = torch.tensor(inputs).unsqueeze(0)
    with torch.no_grad():
        outputs = model(inputs)
    assert outputs.shape == (1, 4, 2)

    # 6.6 Calculating the classification loss and accuracy
    device = torch.device("cpu")
    model.to(device)
    torch.manual_seed(123)
    train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=10)
    assert 0.0 <= train_accuracy <= 1.0 and not model.training  # the book's eval() inside
    val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=10)
    first_ten = [batch for _, batch in zip(range(10), val_loader, strict=False)]
    correct = sum((model(x)[:, -1, :].argmax(-1) == y).sum().item() for x, y in first_ten)
    assert val_accuracy == correct / 80  # the last position, as the book reads it

    with torch.no_grad():
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=5)
        expected = [F.cross_entropy(model(x)[:, -1, :], y).item() for x, y in first_ten[:5]]
    assert val_loss == pytest.approx(sum(expected) / 5, abs=1e-6)
    x, y = first_ten[0]
    assert calc_loss_batch(x, y, model, device).item() == pytest.approx(expected[0], abs=1e-6)

    # 6.7 Fine-tuning the model on supervised data: the package's loop against the book's
    book_model = copy.deepcopy(model)
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    num_epochs = 1
    train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_simple(
        model,
        train_loader,
        val_loader,
        optimizer,
        device,
        num_epochs=num_epochs,
        eval_freq=50,
        eval_iter=5,
    )
    torch.manual_seed(123)
    book_optimizer = torch.optim.AdamW(book_model.parameters(), lr=5e-5, weight_decay=0.1)
    expected = book_train_classifier_simple(
        book_model, train_loader, val_loader, book_optimizer, device, num_epochs, 50, 5
    )
    assert (train_losses, val_losses, train_accs, val_accs, examples_seen) == expected
    assert examples_seen == 1040 and len(train_losses) == 3  # steps 0, 50 and 100

    epochs_tensor = torch.linspace(0, num_epochs, len(train_losses))
    examples_seen_tensor = torch.linspace(0, examples_seen, len(train_losses))
    plot_values(epochs_tensor, examples_seen_tensor, train_losses, val_losses)
    assert Path("loss-plot.pdf").stat().st_size > 0  # the book's file name

    # 6.8 Using the LLM as a spam classifier
    text_1 = (
        "You are a winner you have been specially selected to receive $1000 cash or a $2000 award."
    )
    text_2 = "Hey, just wanted to check if we're still on for dinner tonight? Let me know!"
    for text in (text_1, text_2):
        label = classify_review(text, model, tokenizer, device, max_length=train_dataset.max_length)
        ids = tokenizer.encode(text)
        padded = torch.tensor([ids + [50256] * (train_dataset.max_length - len(ids))])
        with torch.no_grad():
            expected = "spam" if model(padded)[:, -1, :].argmax().item() == 1 else "not spam"
        assert label == expected

    torch.save(model.state_dict(), "review_classifier.pth")
    model_state_dict = torch.load("review_classifier.pth", map_location=device, weights_only=True)
    model.load_state_dict(model_state_dict)
    # The book's names, but for the causal masks the book stores (see the next test).
    with torch.device("meta"):
        book_classifier = BookGPTModel(BASE_CONFIG)
        book_classifier.out_head = nn.Linear(BASE_CONFIG["emb_dim"], num_classes)
    book_names = set(book_classifier.state_dict())
    assert set(model_state_dict) == {name for name in book_names if not name.endswith(".mask")}


# --- State dicts saved by the book's own code ----------------------------------------------


def tiny_book_config() -> dict:
    return {"vocab_size": 97, "context_length": 16, "drop_rate": 0.0, "qkv_bias": True} | {
        "emb_dim": 32,
        "n_layers": 2,
        "n_heads": 4,
    }


def test_a_state_dict_saved_by_the_books_model_loads(tmp_path: Path) -> None:
    cfg = tiny_book_config()
    torch.manual_seed(0)
    book_model = BookGPTModel(cfg).eval()
    book_model.out_head = nn.Linear(cfg["emb_dim"], 2)  # the book's classifier
    torch.save(book_model.state_dict(), tmp_path / "review_classifier.pth")
    state_dict = torch.load(tmp_path / "review_classifier.pth", weights_only=True)
    assert "trf_blocks.0.att.mask" in state_dict

    model = GPTModel(cfg)
    model.out_head = nn.Linear(cfg["emb_dim"], 2)
    model.load_state_dict(state_dict)  # strict: every other key is the book's
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), book_model(ids), rtol=0, atol=1e-5)
    # The mask holds nothing learned, so only a causal mask is accepted.
    state_dict["trf_blocks.1.att.mask"] = torch.zeros(16, 16)
    with pytest.raises(ValueError, match=r"trf_blocks\.1\.att\.mask .* not a causal mask"):
        model.load_state_dict(state_dict)


def test_the_books_load_weights_into_gpt_copies_the_embedding_into_an_untied_head(
    tmp_path: Path,
) -> None:
    cfg = GPTConfig(vocab_size=97, context_length=16, **TINY_SHAPE)
    path = write_openai_checkpoint(
        hf_gpt2(cfg, seed=1), tmp_path / "gpt2" / "124M" / "model.safetensors"
    )
    hparams = '{"n_vocab": 97, "n_ctx": 16, "n_embd": 32, "n_head": 4, "n_layer": 2}'
    (path.parent / "hparams.json").write_text(hparams)
    settings, params = download_and_load_gpt2("124M", tmp_path / "gpt2")
    assert settings == {"n_vocab": 97, "n_ctx": 16, "n_embd": 32, "n_head": 4, "n_layer": 2}

    book, tied = GPTModel(cfg), GPTModel(cfg, init="gpt2")
    load_weights_into_gpt(book, params)
    load_weights_into_gpt(tied, path)  # the file itself works too
    assert book.out_head.weight is not book.tok_emb.weight
    assert torch.equal(book.out_head.weight, book.tok_emb.weight)
    ids = torch.randint(0, 97, (1, 10))
    torch.testing.assert_close(book(ids), tied(ids), rtol=0, atol=0)


# --- The improvements: the book's default, and the keyword that changes it ----------------


@pytest.fixture
def book_csvs(tmp_path: Path) -> Path:
    messages = ["Hi", "WINNER!! Claim your free prize now, call 09061701461", "ok", "See you"]
    frame = pd.DataFrame({"Label": [0, 1, 0, 0], "Text": messages})
    frame.to_csv(tmp_path / "train.csv", index=None)
    return tmp_path / "train.csv"


@pytest.fixture
def tiny_book_classifier() -> GPTModel:
    torch.manual_seed(5)
    model = GPTModel(GPTConfig(context_length=64, **TINY_SHAPE)).eval()
    model.out_head = nn.Linear(32, 2)
    return model


def test_token_position_flexible_reads_the_last_real_token(
    book_csvs: Path, tokenizer, tiny_book_classifier: GPTModel
) -> None:
    model, device = tiny_book_classifier, torch.device("cpu")
    dataset = SpamDataset(book_csvs, tokenizer)
    inputs, targets = next(iter(DataLoader(dataset, batch_size=4)))
    with torch.no_grad():
        every_position = model(inputs)
    lengths = torch.tensor([len(tokenizer.encode(t)) for t in pd.read_csv(book_csvs)["Text"]])
    last_real = every_position[torch.arange(4), lengths - 1]

    book = calc_loss_batch(inputs, targets, model, device)
    flexible = calc_loss_batch(inputs, targets, model, device, token_position="flexible")
    assert book.item() == pytest.approx(F.cross_entropy(every_position[:, -1], targets).item())
    assert flexible.item() == pytest.approx(F.cross_entropy(last_real, targets).item())
    assert book.item() != pytest.approx(flexible.item())
    # Without lengths the real tokens are told from the padding; with them, read directly.
    with_lengths = calc_loss_batch(inputs, targets, model, device, lengths, "flexible")
    assert with_lengths.item() == pytest.approx(flexible.item())


def test_lengths_come_with_each_message_when_asked_for(book_csvs: Path, tokenizer) -> None:
    book = next(iter(DataLoader(SpamDataset(book_csvs, tokenizer), batch_size=4)))
    ours = next(iter(create_data_loader(SpamDataset(book_csvs, tokenizer, with_lengths=True))))
    assert len(book) == 2 and len(ours) == 3
    assert torch.equal(book[0], ours.input_ids[:4]) and torch.equal(book[1], ours.labels[:4])
    assert ours.lengths.tolist()[:4] == [
        len(tokenizer.encode(t)) for t in pd.read_csv(book_csvs)["Text"]
    ]


def test_batch_padding_pads_to_the_longest_message_of_each_batch(
    book_csvs: Path, tokenizer, tiny_book_classifier: GPTModel
) -> None:
    fixed = SpamDataset(book_csvs, tokenizer, with_lengths=True)
    batched = SpamDataset(book_csvs, tokenizer, padding="batch", with_lengths=True)
    assert {len(fixed[i].input_ids) for i in range(4)} == {fixed.max_length}
    short = create_data_loader(batched, batch_size=2)  # "Hi" with the long one, then two short
    widths = [batch.input_ids.shape[1] for batch in short]
    assert widths[0] == fixed.max_length and widths[1] < fixed.max_length
    # The last real token's output is the same whatever the padding.
    model, device = tiny_book_classifier, torch.device("cpu")
    fixed_loader = create_data_loader(fixed, batch_size=2)
    flexible = calc_loss_loader(fixed_loader, model, device, token_position="flexible")
    assert calc_loss_loader(short, model, device, token_position="flexible") == pytest.approx(
        flexible, abs=1e-6
    )
    wrapped = calc_loss_loader(fixed_loader, GPTClassifier(model), device)  # the pipeline's
    assert wrapped == pytest.approx(flexible, abs=1e-6)
    assert calc_loss_loader(fixed_loader, model, device) != pytest.approx(flexible)


def test_the_fast_path_is_a_model_the_books_functions_accept(
    book_csvs: Path, tokenizer, tiny_book_classifier: GPTModel
) -> None:
    model, device = tiny_book_classifier, torch.device("cpu")
    model.requires_grad_(False)
    model.trf_blocks[-1].requires_grad_(True)
    dataset = SpamDataset(book_csvs, tokenizer, with_lengths=True)
    loader = create_data_loader(dataset, batch_size=2)
    fast_model, (fast_loader,) = prepare_fast_path(model, [loader], device)
    book = calc_loss_loader(loader, model, device)
    flexible = calc_loss_loader(loader, model, device, token_position="flexible")
    fast = calc_loss_loader(fast_loader, fast_model, device)
    assert fast == pytest.approx(flexible, abs=1e-6) and fast != pytest.approx(book)


def test_classify_review_reads_the_last_position_unless_told(tokenizer) -> None:
    torch.manual_seed(11)
    model = GPTModel(GPTConfig(context_length=64, **TINY_SHAPE)).eval()
    model.out_head = nn.Linear(32, 2)
    text = "Hey, just wanted to check if we're still on for dinner tonight?"
    ids = tokenizer.encode(text)
    answers = {"last": set(), "flexible": set()}
    for max_length in (len(ids), len(ids) + 10, 64):
        padded = torch.tensor([ids + [END_OF_TEXT_ID] * (max_length - len(ids))])
        with torch.no_grad():
            book = model(padded)[0, -1].argmax().item()
        assert classify_review(text, model, tokenizer, "cpu", max_length) == (
            "spam" if book == 1 else "not spam"
        )
        for position in answers:
            answers[position].add(
                classify_review(text, model, tokenizer, "cpu", max_length, 50256, position)
            )
    assert len(answers["flexible"]) == 1  # the padding does not matter
    assert len(answers["last"]) == 2  # the padding decides: why flexible is the default


def test_gpt2_init_is_one_keyword_away() -> None:
    cfg = GPTConfig(vocab_size=97, context_length=16, **TINY_SHAPE)
    torch.manual_seed(123)
    book = GPTModel(cfg)
    torch.manual_seed(123)
    gpt2 = GPTModel(cfg, init="gpt2")
    # The book's: PyTorch's defaults (an embedding is N(0, 1)), a head of its own.
    assert book.out_head.weight is not book.tok_emb.weight
    assert count_parameters(book) == count_parameters(gpt2) + 97 * 32
    # GPT-2's: N(0, 0.02) everywhere, the head tied to the embedding.
    assert gpt2.out_head.weight is gpt2.tok_emb.weight
    assert book.tok_emb.weight.std() > 10 * gpt2.tok_emb.weight.std()


def test_download_and_unzip_spam_data_keeps_the_books_files(
    tmp_path: Path,
    http_server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.delenv(download.SOURCE_ENV_VAR, raising=False)
    url = http_server.serve("/sms.zip", VALID_ZIP)
    zip_path = tmp_path / "sms_spam_collection.zip"
    extracted_path = tmp_path / "sms_spam_collection"
    data_file_path = extracted_path / "SMSSpamCollection.tsv"

    download_and_unzip_spam_data(url, zip_path, extracted_path, data_file_path)
    assert zip_path.read_bytes() == VALID_ZIP  # the archive stays where the book keeps it
    assert "File downloaded and saved as" in capsys.readouterr().out
    # The pipeline's hardened download of the same archive writes the very same file.
    checked = download_sms_spam(tmp_path / "pipeline", source=zip_path, urls=[])
    assert checked.read_bytes() == data_file_path.read_bytes()
    assert len(read_sms_spam(data_file_path)) == 5574

    gone = http_server.url("/gone.zip")  # 404: nothing may be downloaded below
    download_and_unzip_spam_data(gone, zip_path, extracted_path, data_file_path)
    assert "already exists. Skipping download" in capsys.readouterr().out  # as the book
    data_file_path.unlink()
    download_and_unzip_spam_data(gone, zip_path, extracted_path, data_file_path)  # zip kept
    assert data_file_path.read_bytes() == checked.read_bytes()


def test_download_and_unzip_spam_data_offline_names_the_argument_and_variable(
    tmp_path: Path, http_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(download.SOURCE_ENV_VAR, raising=False)
    paths = (tmp_path / "sms.zip", tmp_path / "sms", tmp_path / "sms" / "SMSSpamCollection.tsv")
    with pytest.raises(ConnectionError, match=r"source=.*SMS_SPAM_SOURCE") as refused:
        download_and_unzip_spam_data(http_server.url("/gone.zip"), *paths)
    assert "--" not in str(refused.value)  # Python's words, not the command line's
    assert not paths[0].exists() and not paths[2].exists()

    (tmp_path / "copy.zip").write_bytes(VALID_ZIP)
    monkeypatch.setenv(download.SOURCE_ENV_VAR, str(tmp_path / "copy.zip"))  # a copy of the zip
    download_and_unzip_spam_data(http_server.url("/gone.zip"), *paths)
    assert len(read_sms_spam(paths[2])) == 5574


def test_download_and_load_gpt2_checks_the_file_against_the_settings(tmp_path: Path) -> None:
    cfg = GPTConfig(vocab_size=97, context_length=16, **TINY_SHAPE)
    write_openai_checkpoint(hf_gpt2(cfg), tmp_path / "gpt2" / "124M" / "model.safetensors")
    # No hparams.json beside the weights: the settings are the released size's (12 blocks).
    found = r"124M/model\.safetensors holds 2 blocks, but the settings say 12"
    with pytest.raises(WeightsError, match=found):
        download_and_load_gpt2("124M", tmp_path / "gpt2")
    with pytest.raises(WeightsError, match="model_size '125M' is not one of 124M, 355M"):
        download_and_load_gpt2("125M", tmp_path / "gpt2")


# --- Where each book name lives (docs/book-api.md) --------------------------------------------

# Every name chapter 6 uses that is not plain Python or pandas: the table must place each one.
CHAPTER_6_NAMES = (
    "tiktoken.get_encoding", "GPT_CONFIG_124M", "BASE_CONFIG", "model_configs", "CHOOSE_MODEL",
    "GPTModel", "generate_text_simple", "text_to_token_ids", "token_ids_to_text",
    "download_and_load_gpt2", "load_weights_into_gpt", "download_and_unzip_spam_data",
    "create_balanced_dataset", "random_split", "SpamDataset", "DataLoader", "calc_loss_batch",
    "calc_loss_loader", "calc_accuracy_loader", "evaluate_model", "train_classifier_simple",
    "plot_values", "classify_review", "torch.save",
)  # fmt: skip
# Names the table places in the reader's own code or in PyTorch, not in a module here.
NOT_OURS = {
    "GPT_CONFIG_124M", "BASE_CONFIG", "model_configs", "CHOOSE_MODEL", "tiktoken", "tokenizer",
    "pad_token_id", "DataLoader", "torch", "model", "cfg", "source", "SMS_SPAM_SOURCE",
    "model_size", "data_file_path", "zip_path",
}  # fmt: skip


def names_table() -> list[tuple[str, str]]:
    """The rows of docs/book-api.md's first table: (the book's names, where they live)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "book-api.md").read_text()
    table = text.split("| the book's name | lives in |\n| --- | --- |\n", 1)[1].split("\n\n")[0]
    rows = [line.strip("|").split(" | ", 1) for line in table.splitlines()]
    return [(book.strip(), place.strip()) for book, place in rows]


def test_the_names_table_places_every_name_of_the_chapter_where_it_is() -> None:
    import importlib
    import re

    rows = names_table()
    placed = " ".join(book for book, _ in rows)
    missing = [name for name in CHAPTER_6_NAMES if f"`{name}" not in placed]
    assert not missing, f"docs/book-api.md has no row for {missing}"
    for book, place in rows:
        modules = [
            importlib.import_module(path.removesuffix(".py").replace("/", "."))
            for path in re.findall(r"`([\w/]+\.py)`", place)
        ]
        # The leading name of every `code` span of the row: `GPTModel(cfg)` -> GPTModel.
        names = {
            match
            for span in re.findall(r"`([^`]+)`", book + " " + place)
            if "/" not in span  # a path, not a name
            for match in re.findall(r"^([A-Za-z_]\w*)", span)
        }
        for name in sorted(names - NOT_OURS):
            assert any(hasattr(module, name) for module in modules), (
                f"docs/book-api.md: {name} is not in {[m.__name__ for m in modules]}"
            )
