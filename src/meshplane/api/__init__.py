"""Resource kinds, their schemas and validation: Istio's, ASM's and meshplane's own."""
