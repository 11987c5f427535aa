"""crossgrad's wire codec: what the server and the SDK share of the messages' contents."""
