"""Deployment: Spark on Kubernetes in TEEs, Gramine manifests, and the key broker's chart.

Everything here renders text (spark-submit argv, pod templates, RBAC, a Gramine manifest) that a test can read
and validate without a cluster; only :func:`ppml.deploy.submit.run` starts a process. No renderer ever puts a
secret into a manifest, an environment variable or a command line: pods get keys from the key broker after
attestation, or files from the Azure Key Vault CSI driver.
"""

from __future__ import annotations
