"""The search benchmark's methods, one runner per module; faiss is imported only inside its runners."""
