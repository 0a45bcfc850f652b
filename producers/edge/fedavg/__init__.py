"""FedAvg on the edge daemon: fine-tune the global model on local images and send the update by reference."""
