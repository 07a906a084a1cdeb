"""smf.artifact: the artifact store over gRPC (smf.common.v1.ArtifactService), for clients without store credentials."""
