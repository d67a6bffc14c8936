"""TPC-H on encrypted data; submit with: ppml submit ... local:///opt/ppml/jobs/tpch.py DATA OUTPUT --key URI."""

from ppml.deploy.jobs import main

main("tpch")
