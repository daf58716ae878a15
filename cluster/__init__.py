"""A local cluster as production runs it, and drills that break its hosts under load.

``python3 dev.py cluster`` starts, on this machine, three gRPC hosts (each on its
own loopback address), a web host, HAProxy balancing gRPC calls over the hosts
by their ``grpc.health.v1`` status, PgBouncer in transaction mode in front of a
PostgreSQL of the cluster's own, and a Redis of its own as the shared cache
(``cluster.hosts``). ``python3 dev.py drill [name ...]`` runs the drills of
``cluster.drills`` against a new cluster, each under the mixed load of
``cluster.load``, and prints their figures. The configuration of HAProxy and
PgBouncer is ``deploy/cluster/``, used as is.

Nothing here is imported by the product; Django is not needed to run it (the
servers it starts are the project's own commands).
"""
