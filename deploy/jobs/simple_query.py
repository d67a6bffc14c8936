"""The simple query; submit with: ppml submit ... local:///opt/ppml/jobs/simple_query.py PEOPLE OUTPUT --key URI."""

from ppml.deploy.jobs import main

main("simple_query")
