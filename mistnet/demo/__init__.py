"""``mistnet demo``: a whole job on one machine: services, provisioning, two edges, the cloud, a report."""
