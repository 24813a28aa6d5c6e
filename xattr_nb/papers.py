"""The thirty papers of the course: number, slug and title (the spec lives in shared/papers/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xattr_nb.checks import InputError

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class Paper:
    number: int
    slug: str
    title: str

    @property
    def notebook_name(self) -> str:
        return f"{self.number:02d}_{self.slug}.ipynb"


PAPERS: tuple[Paper, ...] = tuple(
    Paper(n, slug, title)
    for n, slug, title in [
        (0, "tour", "A tour of xattr-nb: worlds, models, attribution and evaluation"),
        (1, "difull", "Better Understanding Differences in Attribution Methods via Systematic Evaluations"),
        (2, "smdl", "Less is More: Fewer Interpretable Region via Submodular Subset Selection"),
        (3, "lima", "Less is More: Efficient Black-box Attribution via Minimal Interpretable Subset Selection"),
        (4, "vps", "Interpreting Object-level Foundation Models via Visual Precision Search"),
        (5, "comet", "Comprehensive Attribution: Inherently Explainable Vision Model with Feature Detector"),
        (6, "causal_paths", "Causal Analysis for Robust Interpretability of Neural Networks"),
        (7, "reagent", "ReAGent: Towards A Model-agnostic Feature Attribution Method for Generative Language Models"),
        (8, "laquer", "LAQuer: Localized Attribution Queries in Content-grounded Generation"),
        (9, "cap", "Hybrid Attribution Priors for Explainable and Robust Model Training"),
        (10, "relp", "RelP: Faithful and Efficient Circuit Discovery via Relevance Patching"),
        (11, "qa_circuits", "On Mechanistic Circuits for Extractive Question-Answering"),
        (12, "steering", "Activation Steering for Bias Mitigation: An Interpretable Approach to Safer LLMs"),
        (
            13,
            "sae_regularization",
            "Self-Regularization with Sparse Autoencoders for Controllable LLM-based Classification",
        ),
        (
            14,
            "concept_sae",
            "I Predict Therefore I Am: Is Next Token Prediction Enough to Learn Human-Interpretable Concepts from Data?",
        ),
        (15, "roma", "Routing Manifold Alignment Improves Generalization of Mixture-of-Experts LLMs"),
        (
            16,
            "concept_finetuning",
            "Concept-Guided Fine-Tuning: Steering ViTs away from Spurious Correlations to Improve Robustness",
        ),
        (
            17,
            "panoptic_patches",
            "All Patches Matter, More Patches Better: Enhance AI-Generated Image Detection via Panoptic Patch Learning",
        ),
        (18, "elr", "Early-Learning Regularization Prevents Memorization of Noisy Labels"),
        (19, "inductive_bias", "Towards Exact Computation of Inductive Bias"),
        (20, "promptsrc", "Self-regulating Prompts: Foundational Model Adaptation without Forgetting"),
        (21, "crossmodal_ood", "Enhanced OoD Detection through Cross-Modal Alignment of Multi-Modal Representations"),
        (22, "lvlm_debias", "Debiasing Large Visual Language Models"),
        (23, "sage", "Discovering Failure Modes of Text-guided Diffusion Models via Adversarial Search"),
        (24, "r0", "Rewards Are Enough for Fast Photo-Realistic Text-to-image Generation"),
        (25, "cream", "CREAM: Consistency Regularized Self-Rewarding Language Models"),
        (
            26,
            "bayesprompt",
            "BayesPrompt: Prompting Large-Scale Pre-Trained Language Models on Few-shot Inference via Debiased Domain Abstraction",
        ),
        (
            27,
            "kalm_embedding",
            "KaLM-Embedding-V2: Superior Training Techniques and Data Inspire A Versatile Embedding Model",
        ),
        (28, "tjepa", "T-JEPA: Augmentation-Free Self-Supervised Learning for Tabular Data"),
        (29, "multvae", "Variational Autoencoders for Collaborative Filtering"),
        (30, "ssl_recsys", "Self-supervised Learning for Large-scale Item Recommendations"),
    ]
)


def find(key: str | int, papers: tuple[Paper, ...] = PAPERS) -> Paper:
    """Look a paper up by number (``3``, ``"03"``) or slug (``"lima"``)."""
    text = str(key).strip()
    for p in papers:
        if text == p.slug or (text.isdigit() and int(text) == p.number) or text == p.notebook_name:
            return p
    known = ", ".join(f"{p.number:02d}/{p.slug}" for p in papers)
    raise InputError(f"no paper matches {key!r}; known: {known}")
