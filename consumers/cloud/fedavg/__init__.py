"""FedAvg on the cloud daemon: global models out on mistnet.control, updates in, sample-weighted average."""
