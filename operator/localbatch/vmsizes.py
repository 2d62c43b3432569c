"""The VM sizes the local Batch service knows: vCPUs and the quota family of each.

Batch counts a pool's cores against the account's core quotas (``dedicatedCoreQuota`` per account
and ``dedicatedCoreQuotaPerVMFamily`` per family for dedicated nodes; one ``lowPriorityCoreQuota``
for low-priority / Spot nodes, without families: Azure docs, "Batch service quotas and limits",
"Core quotas in Batch service mode"). So the service needs the vCPUs and the family of a size.

The table lists common sizes with the vCPUs of Azure's size pages (Dv2/DSv2, Dv3/Dsv3, Dv4/Dsv4,
Ddv4/Ddsv4, Dv5/Dsv5/Ddsv5/Dasv5/Dadsv5, Ev3/Esv3, Ev5/Esv5, Fsv2, F/Fs, Av2, A, D, B, NC series;
the Dv3/Dsv3/Dv4/Dsv4 and D rows were checked against the published size tables, e.g.
``Standard_D2s_v3 -- 2 vCPUs``, ``Standard_D11 -- 2 vCPUs``), named by their quota family as the
Batch account's ``dedicatedCoreQuotaPerVMFamily`` names them (``standardDSv3Family``). Names match
case-insensitively, as Batch matches them (recorded traffic sends ``standard_d2_v2``).

A size outside the table is "not supported" here: its auto pool gets the resize error
``UnsupportedVMSize`` (:mod:`localbatch.quotas`). Add a row to support another size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VmSize:
    """One VM size: its canonical name, vCPUs per node and quota family."""

    name: str
    cores: int
    family: str


def _series(family: str, pattern: str, cores: tuple[int, ...]) -> list[VmSize]:
    """Sizes of a series whose name carries the vCPUs: ``pattern`` has ``{n}`` where they go."""
    return [VmSize(pattern.format(n=n), n, family) for n in cores]


def _named(family: str, sizes: dict[str, int]) -> list[VmSize]:
    """Sizes of a series whose number is not the vCPUs (the original D and A series, Dv2)."""
    return [VmSize(name, cores, family) for name, cores in sizes.items()]


_V3 = (2, 4, 8, 16, 32, 48, 64)
_V5 = (2, 4, 8, 16, 32, 48, 64, 96)

_SIZES: list[VmSize] = [
    *_named("standardA0_A7Family", {"Standard_A1": 1, "Standard_A2": 2, "Standard_A3": 4, "Standard_A4": 8}),
    *_named("standardAv2Family", {
        "Standard_A1_v2": 1, "Standard_A2_v2": 2, "Standard_A4_v2": 4, "Standard_A8_v2": 8,
        "Standard_A2m_v2": 2, "Standard_A4m_v2": 4, "Standard_A8m_v2": 8,
    }),
    *_named("standardBSFamily", {
        "Standard_B1s": 1, "Standard_B1ms": 1, "Standard_B2s": 2, "Standard_B2ms": 2, "Standard_B4ms": 4,
        "Standard_B8ms": 8, "Standard_B12ms": 12, "Standard_B16ms": 16, "Standard_B20ms": 20,
    }),
    *_named("standardDFamily", {
        "Standard_D1": 1, "Standard_D2": 2, "Standard_D3": 4, "Standard_D4": 8,
        "Standard_D11": 2, "Standard_D12": 4, "Standard_D13": 8, "Standard_D14": 16,
    }),
    *_named("standardDv2Family", {
        "Standard_D1_v2": 1, "Standard_D2_v2": 2, "Standard_D3_v2": 4, "Standard_D4_v2": 8, "Standard_D5_v2": 16,
        "Standard_D11_v2": 2, "Standard_D12_v2": 4, "Standard_D13_v2": 8, "Standard_D14_v2": 16,
    }),
    *_named("standardDSv2Family", {
        "Standard_DS1_v2": 1, "Standard_DS2_v2": 2, "Standard_DS3_v2": 4, "Standard_DS4_v2": 8,
        "Standard_DS5_v2": 16,
    }),
    *_series("standardDv3Family", "Standard_D{n}_v3", _V3),
    *_series("standardDSv3Family", "Standard_D{n}s_v3", _V3),
    *_series("standardDv4Family", "Standard_D{n}_v4", _V3),
    *_series("standardDSv4Family", "Standard_D{n}s_v4", _V3),
    *_series("standardDDv4Family", "Standard_D{n}d_v4", _V3),
    *_series("standardDDSv4Family", "Standard_D{n}ds_v4", _V3),
    *_series("standardDv5Family", "Standard_D{n}_v5", _V5),
    *_series("standardDSv5Family", "Standard_D{n}s_v5", _V5),
    *_series("standardDDv5Family", "Standard_D{n}d_v5", _V5),
    *_series("standardDDSv5Family", "Standard_D{n}ds_v5", _V5),
    *_series("standardDASv5Family", "Standard_D{n}as_v5", _V5),
    *_series("standardDADSv5Family", "Standard_D{n}ads_v5", _V5),
    *_series("standardEv3Family", "Standard_E{n}_v3", (2, 4, 8, 16, 20, 32, 48, 64)),
    *_series("standardESv3Family", "Standard_E{n}s_v3", (2, 4, 8, 16, 20, 32, 48, 64)),
    *_series("standardEv5Family", "Standard_E{n}_v5", (2, 4, 8, 16, 20, 32, 48, 64, 96)),
    *_series("standardESv5Family", "Standard_E{n}s_v5", (2, 4, 8, 16, 20, 32, 48, 64, 96)),
    *_series("standardFSv2Family", "Standard_F{n}s_v2", (2, 4, 8, 16, 32, 48, 64, 72)),
    *_series("standardFFamily", "Standard_F{n}", (1, 2, 4, 8, 16)),
    *_series("standardFSFamily", "Standard_F{n}s", (1, 2, 4, 8, 16)),
    *_series("standardNCFamily", "Standard_NC{n}", (6, 12, 24)),
    *_series("standardNCSv3Family", "Standard_NC{n}s_v3", (6, 12, 24)),
    *_series("standardNCASv3_T4Family", "Standard_NC{n}as_T4_v3", (4, 8, 16, 64)),
]

SIZES: dict[str, VmSize] = {size.name.lower(): size for size in _SIZES}
"""Every known size by its lower-cased name."""


def lookup(vm_size: str | None) -> VmSize | None:
    """The size named ``vm_size`` (any casing), or None when Batch would not support it."""
    return SIZES.get((vm_size or "").strip().lower())
