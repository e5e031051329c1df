"""Methods users would pick instead of PgM, as arms: each written from its paper, cited in its
module (``ogm_ge``: Peng et al., CVPR 2022; ``mmpareto``: Wei & Hu, ICML 2024; ``ume`` and
``umt``: Du et al., ICML 2023; ``guided``: PgM guided by uni-modal training), and registered by
the bench's own plugin beside the built-in arms. docs/method.md says how each is generalised to
the bench's hosts and where it runs."""

from __future__ import annotations

from pgm_plugins.bench.arm import ArmSpec

__all__ = ["method_arms"]


def method_arms() -> list[ArmSpec]:
    """The method arms the bench plugin registers (a plain list: one entry per method)."""
    from pgm_plugins.bench.methods.guided import guided_arm
    from pgm_plugins.bench.methods.mmpareto import mmpareto_arm
    from pgm_plugins.bench.methods.ogm_ge import ogm_ge_arm
    from pgm_plugins.bench.methods.ume import ume_arm
    from pgm_plugins.bench.methods.umt import umt_arm

    return [ogm_ge_arm(), mmpareto_arm(), ume_arm(), umt_arm(), guided_arm()]
