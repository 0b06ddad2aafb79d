"""Alpha-beta communication costs: point-to-point transfers and ring collectives on a cluster's links.

Every message of ``b`` bytes on a link costs ``alpha + b / bandwidth`` (Hockney's model), with
``alpha = Link.latency_s`` and ``bandwidth = Link.bandwidth_Bps`` per direction. Collectives use the
bandwidth-optimal ring algorithms of Thakur, Rabenseifner and Gropp (2005) and Chan et al. (2007)
for a group of ``n`` devices and a buffer of ``N`` bytes:

=================  ==============================  =========================================
collective         latency term                    bandwidth term
=================  ==============================  =========================================
all_reduce         ``2 (n-1) alpha``               ``2 (n-1)/n * N / bandwidth``
all_gather         ``(n-1) alpha``                 ``(n-1)/n * N / bandwidth`` (N: full buffer)
reduce_scatter     ``(n-1) alpha``                 ``(n-1)/n * N / bandwidth`` (N: full buffer)
all_to_all         ``(n-1) alpha``                 ``(n-1)/n * N / bandwidth`` (N: sent per device)
=================  ==============================  =========================================

A group that spans several nodes runs hierarchically, as NCCL and Horovod do: an intra-node stage on
the fast link and an inter-node stage on the slow one, see :func:`collective_time`. The inter-node
bandwidth is per device (one NIC per accelerator, as on DGX H100/A100), so the parallel inter-node
rings of the ``g`` local devices do not share it. This module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence

from parplan.cluster import Cluster, Link
from parplan.errors import InvalidInputError

#: Collective kinds :func:`collective_time` understands.
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


def _check_device(cluster: Cluster, device: int, where: str) -> None:
    if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device < cluster.num_devices:
        raise InvalidInputError(
            f"{where}: {device!r} is not a device of cluster {cluster.name!r} (0..{cluster.num_devices - 1})"
        )


def _check_bytes(nbytes: float, where: str) -> None:
    if not nbytes >= 0:
        raise InvalidInputError(f"{where}: must be >= 0 bytes, got {nbytes}")


def p2p_time(cluster: Cluster, src: int, dst: int, nbytes: float) -> float:
    """Time to send ``nbytes`` from device ``src`` to device ``dst``.

    ``alpha + nbytes / bandwidth`` on the intra-node link when both devices share a node, on the
    inter-node link otherwise; 0 when ``src == dst`` (the tensor stays in place) or ``nbytes == 0``
    (nothing is sent).

    Parameters
    ----------
    cluster
        The cluster whose links are used.
    src, dst
        Device indices.
    nbytes
        Bytes transferred.

    Returns
    -------
    float
        Seconds.
    """
    _check_device(cluster, src, "p2p src")
    _check_device(cluster, dst, "p2p dst")
    _check_bytes(nbytes, "p2p nbytes")
    if src == dst or nbytes == 0:
        return 0.0
    return cluster.link(src, dst).time(nbytes)


def ring_time(kind: str, n: int, nbytes: float, link: Link) -> float:
    """Flat ring collective of ``n`` devices on one link class (formulas in the module docstring).

    Parameters
    ----------
    kind
        One of ``COLLECTIVES``.
    n
        Group size; a group of one costs 0.
    nbytes
        Full buffer for all_reduce / all_gather / reduce_scatter, bytes sent per device for
        all_to_all.
    link
        The link every ring step uses.
    """
    if kind not in COLLECTIVES:
        raise InvalidInputError(f"collective kind: unknown {kind!r}; use one of {', '.join(COLLECTIVES)}")
    if n <= 1 or nbytes == 0:
        return 0.0
    steps = 2 * (n - 1) if kind == "all_reduce" else n - 1
    return steps * link.latency_s + steps / n * nbytes / link.bandwidth_Bps


def collective_time(cluster: Cluster, kind: str, nbytes: float, group: Sequence[int]) -> float:
    """Time of one collective over the devices ``group``.

    Within one node this is the flat ring of the module docstring on the intra-node link. A group
    spanning ``k`` nodes with at most ``g`` of its devices on one node (and at least ``g_min``) is
    hierarchical:

    - all_reduce: intra-node reduce-scatter of ``N``, then ``g`` parallel inter-node all-reduces of
      the ``N / g_min`` shards across the ``k`` nodes, then an intra-node all-gather of ``N``:
      ``2 [(g-1) alpha_i + (g-1)/g N / bw_i] + 2 (k-1) alpha_e + 2 (k-1)/k (N/g_min) / bw_e``;
    - all_gather / reduce_scatter: an inter-node stage on the ``N / g_min`` slice a node's devices
      own, then an intra-node stage on ``N`` (reverse order for reduce_scatter, same time):
      ``(k-1) alpha_e + (k-1)/k (N/g_min) / bw_e + (g-1) alpha_i + (g-1)/g N / bw_i``;
    - all_to_all: each device sends ``(g-1)/n`` of its ``N`` bytes to node-local peers and the
      other ``(n-g_min)/n`` off-node, one message per peer, the two phases one after the other
      (conservative; overlapping them as DeepEP does is at most 2x faster):
      ``(g-1) alpha_i + (g-1)/n N / bw_i + (n-g_min) alpha_e + (n-g_min)/n N / bw_e``.

    With ``g = n`` (one node) or ``g = 1`` (one device per node) these reduce to the flat rings.

    Parameters
    ----------
    cluster
        The cluster whose links are used.
    kind
        One of ``COLLECTIVES``.
    nbytes
        Full (unsharded) buffer for all_reduce / all_gather / reduce_scatter; bytes one device sends
        in total for all_to_all.
    group
        Distinct device indices taking part; a group of one device costs 0.

    Returns
    -------
    float
        Seconds.
    """
    if kind not in COLLECTIVES:
        raise InvalidInputError(f"collective kind: unknown {kind!r}; use one of {', '.join(COLLECTIVES)}")
    _check_bytes(nbytes, f"{kind} nbytes")
    for k, d in enumerate(group):
        _check_device(cluster, d, f"{kind} group[{k}]")
    if len(set(group)) != len(group):
        raise InvalidInputError(f"{kind} group: devices repeat in {list(group)}; list each device once")
    n = len(group)
    if n <= 1 or nbytes == 0:
        return 0.0
    per_node: dict[int, int] = {}
    for d in group:
        node = cluster.devices[d].node
        per_node[node] = per_node.get(node, 0) + 1
    k = len(per_node)
    if k == 1:
        return ring_time(kind, n, nbytes, cluster.intra_node)
    g, g_min = max(per_node.values()), min(per_node.values())
    intra, inter = cluster.intra_node, cluster.inter_node
    if kind == "all_reduce":
        return 2 * ring_time("reduce_scatter", g, nbytes, intra) + ring_time(
            "all_reduce", k, nbytes / g_min, inter
        )
    if kind in ("all_gather", "reduce_scatter"):
        return ring_time(kind, g, nbytes, intra) + ring_time(kind, k, nbytes / g_min, inter)
    # all_to_all
    local = (g - 1) * intra.latency_s + (g - 1) / n * nbytes / intra.bandwidth_Bps
    remote = (n - g_min) * inter.latency_s + (n - g_min) / n * nbytes / inter.bandwidth_Bps
    return local + remote
