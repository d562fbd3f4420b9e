"""Chapter 6: fine-tuning GPT-2 to tell spam from ham in SMS messages."""
